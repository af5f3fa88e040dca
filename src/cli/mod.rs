//! The programs behind `examples/{train,generate,report}.rs`, compiled once, here, for the backend
//! the cargo features select ([`crate::backend`]).
//!
//! Why in the library: the training and sampling code is generic over the backend, and Rust
//! compiles a generic function in the crate that names its types. When each example named them,
//! every example binary compiled the whole model, Learner and optimiser again (3.7 minutes in
//! release for `generate` after `train` was built). Here the instantiation happens once, in the
//! library; an example is one call to a `main` below and links in seconds.
//!
//! Library users never need this module: it parses command lines and prints. Everything it does
//! is available as library calls ([`crate::train`], [`crate::generate`], [`crate::report`]).

pub mod generate;
pub mod report;
pub mod train;

/// The library's names of run options and config fields → the train program's flags. Library
/// messages name what a library user sets (`TrainOptions::data`, `max_seq_len`); the programs
/// print them with the flags a program user types.
const FLAGS: [(&str, &str); 12] = [
    ("`TrainOptions::data`", "--data"),
    ("`TrainOptions::tokenizer_file`", "--tokenizer"),
    ("`TrainOptions::artifact_dir`", "--artifact-dir"),
    ("`TrainOptions::resume`", "--resume"),
    ("`TokenizerKind::Char`", "--char"),
    ("`max_seq_len`", "--seq-len"),
    ("`vocab_size`", "--vocab-size"),
    ("`lr`", "--lr"),
    ("`aux_coef`", "--aux-coef"),
    ("`z_coef`", "--z-coef"),
    ("`expert_bias_rate`", "--expert-bias-rate"),
    ("`eval_capacity_factor`", "--eval-capacity-factor"),
];

/// `text` with the library's option and field names replaced by the program's flags.
pub fn in_flags(text: &str) -> String {
    FLAGS.iter().fold(text.to_string(), |text, (name, flag)| {
        text.replace(name, flag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_become_flags() {
        assert_eq!(
            in_flags("use a longer corpus (`TrainOptions::data`) or a smaller `max_seq_len`"),
            "use a longer corpus (--data) or a smaller --seq-len"
        );
    }
}
