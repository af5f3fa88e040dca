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
