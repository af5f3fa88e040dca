//! What defines a training run: [`TrainingConfig`] (saved as `config.json`), its validation and
//! the strict reading of config files. Errors name the config field (`TrainingConfig.batch_size`);
//! a program maps fields to its own flags.

use std::path::Path;

use burn::config::Config;

use super::loader::EpochOrder;
use crate::Result as MoeResult;
pub use crate::data::TokenizerKind;
use crate::error::Error;
use crate::lm::SwitchLmConfig;
use crate::metrics::HealthConfig;

/// Everything that defines a training run; saved as `config.json` in the artifact directory.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// The model (its `vocab_size` is set from the tokenizer; `max_seq_len` is the window).
    pub model: SwitchLmConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerKind,
    /// Windows per batch (default 32).
    #[config(default = 32)]
    pub batch_size: usize,
    /// Epochs (default 1). Without `max_steps` an epoch is one pass over the training windows;
    /// with `max_steps` it is `max_steps / num_epochs` batches of windows drawn at random, which
    /// may be less or more than one pass.
    #[config(default = 1)]
    pub num_epochs: usize,
    /// A step budget for quick runs: training stops after this many optimiser steps, spread
    /// evenly over the epochs (default: none, whole passes).
    pub max_steps: Option<usize>,
    /// Peak learning rate of AdamW (default 3e-3).
    #[config(default = 3e-3)]
    pub lr: f64,
    /// Final learning rate of the cosine, as a fraction of `lr` (default 0.1).
    #[config(default = 0.1)]
    pub min_lr_ratio: f64,
    /// Linear warm-up steps (default 50; at most half the run).
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// AdamW weight decay (default 0.01).
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Gradient clipping by norm, per parameter tensor as burn's `GradientClippingConfig::Norm`
    /// clips (default 1.0).
    #[config(default = 1.0)]
    pub grad_clip: f64,
    /// Share of the corpus (its tail) held out for validation (default 0.1).
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Seed of initialisation and shuffling (default 42).
    #[config(default = 42)]
    pub seed: u64,
    /// Early stopping: stop once the validation loss has not improved for this many epochs, and
    /// save the best epoch's weights as `model.mpk`. None (default): train every epoch.
    pub patience: Option<usize>,
    /// Optimiser steps per epoch, i.e. between checkpoints (a kill loses at most this many).
    /// With `max_steps`: the budget is cut into ⌈max_steps / checkpoint_every⌉ epochs (and
    /// `num_epochs` is not used). Without: the `num_epochs` passes are cut into epochs of this
    /// many steps. None (default): `max_steps / num_epochs` with a budget; otherwise a tenth of
    /// the run, at most one pass.
    pub checkpoint_every: Option<usize>,
    /// Router health alarms (dead experts, collapse) and what they do.
    #[config(default = "HealthConfig::new()")]
    pub health: HealthConfig,
}

/// How a run is cut into epochs (checkpoint intervals), from [`TrainingConfig::epoch_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlan {
    /// Epochs of the run (the Learner's, each ending with validation and a checkpoint).
    pub epochs: usize,
    /// Optimiser steps per epoch (the last may be shorter without a step budget).
    pub steps_per_epoch: usize,
    /// Optimiser steps of the whole run.
    pub total_steps: usize,
    /// Steps of one pass over the training windows.
    pub steps_per_pass: usize,
    /// How each epoch picks its windows.
    pub order: EpochOrder,
}

/// The config's name in errors.
const CONFIG: &str = "TrainingConfig";

impl TrainingConfig {
    /// The window length S.
    pub fn seq_len(&self) -> usize {
        self.model.max_seq_len
    }

    /// Optimiser steps per epoch when the training split holds `windows` windows.
    #[deprecated(note = "use epoch_plan(windows).steps_per_epoch")]
    pub fn steps_per_epoch(&self, windows: usize) -> usize {
        self.epoch_plan(windows).steps_per_epoch
    }

    /// The run's epochs when the training split holds `windows` windows (see
    /// [`checkpoint_every`](Self::checkpoint_every)).
    pub fn epoch_plan(&self, windows: usize) -> EpochPlan {
        let batch = self.batch_size.max(1);
        let steps_per_pass = windows.div_ceil(batch).max(1);
        match self.max_steps {
            Some(max) => {
                let every = self
                    .checkpoint_every
                    .unwrap_or_else(|| max.div_ceil(self.num_epochs.max(1)))
                    .max(1);
                let epochs = max.div_ceil(every).max(1);
                EpochPlan {
                    epochs,
                    steps_per_epoch: every,
                    total_steps: epochs * every,
                    steps_per_pass,
                    order: EpochOrder::Sample(every * batch),
                }
            }
            None => {
                let total_steps = (windows * self.num_epochs).div_ceil(batch).max(1);
                let every = self
                    .checkpoint_every
                    .unwrap_or_else(|| total_steps.div_ceil(10).min(steps_per_pass))
                    .max(1);
                EpochPlan {
                    epochs: total_steps.div_ceil(every),
                    steps_per_epoch: every,
                    total_steps,
                    steps_per_pass,
                    order: EpochOrder::Passes {
                        per_epoch: every * batch,
                        total: windows * self.num_epochs,
                    },
                }
            }
        }
    }

    /// Checks the run settings and the model; errors name the field to change
    /// ([`Error::Config`]).
    pub fn validate(&self) -> MoeResult<()> {
        let fail = |field: &'static str, value: String, reason: &str| {
            Err(Error::config(CONFIG, field, value, reason))
        };
        if self.batch_size == 0 {
            return fail("batch_size", "0".into(), "must be at least 1");
        }
        if self.num_epochs == 0 {
            return fail("num_epochs", "0".into(), "must be at least 1");
        }
        if self.patience == Some(0) {
            return fail("patience", "0".into(), "must be at least 1 epoch");
        }
        if self.checkpoint_every == Some(0) {
            return fail("checkpoint_every", "0".into(), "must be at least 1 step");
        }
        if self.max_steps == Some(0) {
            return fail("max_steps", "0".into(), "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(
                "lr",
                self.lr.to_string(),
                "must be a positive learning rate",
            );
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return fail(
                "valid_fraction",
                self.valid_fraction.to_string(),
                "must lie strictly between 0 and 1",
            );
        }
        if self.model.max_seq_len < 2 {
            return Err(Error::config(
                "SwitchLmConfig",
                "max_seq_len",
                self.model.max_seq_len,
                "too short for a language model: use at least 2",
            ));
        }
        if let TokenizerKind::Bpe { vocab_size } = self.tokenizer
            && vocab_size < 257
        {
            return Err(Error::config(
                "TokenizerKind::Bpe",
                "vocab_size",
                vocab_size,
                "too small for a byte-level BPE: use at least 257, or a character-level \
                 tokenizer",
            ));
        }
        // vocab_size 0 means "set from the tokenizer" (checked again once it is known).
        let mut model = self.model.clone();
        model.vocab_size = model.vocab_size.max(1);
        model.validate()
    }
}

impl TrainingConfig {
    /// Reads a complete config file — a run's `config.json`, or the output of the train
    /// program's print-config output — strictly: a field that is not a setting (a typo), a value of
    /// the wrong type or a missing setting is an [`Error::ConfigFile`] naming the field (and the
    /// closest setting's name, for a typo), where a plain [`Config::load`] would ignore an
    /// unknown field. The values are not [validated](Self::validate) here.
    pub fn read(path: &Path) -> MoeResult<Self> {
        let text = read_file(path)?;
        Self::from_json(&text).map_err(|(field, message)| config_file_error(path, field, message))
    }

    /// Reads a config file that may leave settings out: they keep `base`'s values (a preset,
    /// say), and the file's fields replace them. Otherwise as strict as [`read`](Self::read).
    pub fn read_over(path: &Path, base: &Self) -> MoeResult<Self> {
        let text = read_file(path)?;
        Self::from_json_over(&text, base)
            .map_err(|(field, message)| config_file_error(path, field, message))
    }

    /// [`read`](Self::read) on text; the error is (field path, message).
    pub fn from_json(text: &str) -> std::result::Result<Self, (String, String)> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| (String::new(), format!("not JSON: {e}")))?;
        Self::from_value(value)
    }

    /// [`read_over`](Self::read_over) on text; the error is (field path, message).
    pub fn from_json_over(text: &str, base: &Self) -> std::result::Result<Self, (String, String)> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| (String::new(), format!("not JSON: {e}")))?;
        let mut merged = serde_json::to_value(base)
            .map_err(|e| (String::new(), format!("cannot write the base config: {e}")))?;
        merge(&mut merged, value.clone());
        let config = Self::from_value(merged)?;
        // Every field of the file must be a setting (merging kept base's keys for the rest).
        check_known(&value, &config)?;
        Ok(config)
    }

    /// A config from a JSON value: checked for unknown keys (first against a preset's keys, so
    /// that a typo is named rather than reported as the missing setting it hides), typed (errors
    /// name the field), then checked against its own keys.
    fn from_value(mut value: serde_json::Value) -> std::result::Result<Self, (String, String)> {
        check_known(&value, &super::Preset::Cpu.config())?;
        add_missing_newer_fields(&mut value);
        // Parsed from text so that a type error has a position, which names its field.
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        let config: Self = serde_json::from_str(&text).map_err(|e| {
            let message = e.to_string();
            // serde names a missing field itself; otherwise the field is the key before the
            // error's position.
            let field = if message.starts_with("missing field") {
                String::new()
            } else {
                key_before(&text, e.line(), e.column()).unwrap_or_default()
            };
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string();
            let what = if field.is_empty() {
                message
            } else {
                format!("field `{field}`: {message}")
            };
            (field, what)
        })?;
        check_known(&value, &config)?;
        Ok(config)
    }
}

fn read_file(path: &Path) -> MoeResult<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))
}

fn config_file_error(path: &Path, field: String, message: String) -> Error {
    Error::ConfigFile {
        file: path.to_path_buf(),
        field,
        message,
    }
}

/// An error for the first key of `value` that is not a setting of `config`.
fn check_known(
    value: &serde_json::Value,
    config: &TrainingConfig,
) -> std::result::Result<(), (String, String)> {
    let known = serde_json::to_value(config)
        .map_err(|e| (String::new(), format!("cannot be written back: {e}")))?;
    match unknown_field(value, &known, "") {
        None => Ok(()),
        Some((path, suggestion)) => {
            let hint = match suggestion {
                Some(s) => format!(" (did you mean `{s}`?)"),
                None => String::new(),
            };
            Err((
                path.clone(),
                format!(
                    "`{path}` is not a setting of TrainingConfig{hint}: fix or remove it (a run's \
                     config.json lists every setting)"
                ),
            ))
        }
    }
}

/// Settings added after a config.json could have been written, with the value that reproduces
/// the older behaviour: a run's config from an earlier version still reads (and resumes).
const NEWER_FIELDS: [(&str, &str); 9] = [
    ("model.tie_embeddings", "false"),
    ("model.encoder.layer.moe.balance_scope", "\"Batch\""),
    ("model.encoder.layer.moe.router_bias", "false"),
    ("model.encoder.layer.moe.n_group", "1"),
    ("model.encoder.layer.moe.topk_group", "1"),
    ("model.encoder.layer.moe.routed_scaling_factor", "1.0"),
    ("model.encoder.layer.moe.normalize_top1", "false"),
    ("model.encoder.layer.moe.selection_bias", "false"),
    ("model.encoder.layer.moe.forced_routing", "\"Off\""),
];

/// Inserts each of [`NEWER_FIELDS`] that `value` lacks (where its parent object exists).
fn add_missing_newer_fields(value: &mut serde_json::Value) {
    for (path, default) in NEWER_FIELDS {
        let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
        let pointer = format!("/{}", parent.replace('.', "/"));
        if let Some(object) = value.pointer_mut(&pointer).and_then(|v| v.as_object_mut()) {
            object
                .entry(last)
                .or_insert_with(|| serde_json::from_str(default).expect("a JSON literal"));
        }
    }
}

/// Writes `over`'s fields into `base`: objects merge key by key, anything else replaces — also
/// an enum variant written as an object (`{"Bpe": {...}}`) replaces another variant.
fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            let variant = |o: &serde_json::Map<String, Value>| {
                o.len() == 1 && o.keys().all(|k| k.starts_with(char::is_uppercase))
            };
            if variant(base) && variant(&over) && base.keys().ne(over.keys()) {
                *base = over;
                return;
            }
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// The first key of `input` (depth first, in the file's order) that `known` (the same config
/// written back) lacks, as a dotted path, with the closest known key at its level.
fn unknown_field(
    input: &serde_json::Value,
    known: &serde_json::Value,
    prefix: &str,
) -> Option<(String, Option<String>)> {
    let (serde_json::Value::Object(input), serde_json::Value::Object(known)) = (input, known)
    else {
        return None;
    };
    for (key, value) in input {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            Some(k) => {
                if let Some(found) = unknown_field(value, k, &path) {
                    return Some(found);
                }
            }
            None => {
                let closest = known
                    .keys()
                    .map(|k| (edit_distance(k, key), k))
                    .filter(|(d, _)| *d <= 3)
                    .min()
                    .map(|(_, k)| k.clone());
                return Some((path, closest));
            }
        }
    }
    None
}

/// Levenshtein distance (typos: a missing, extra or changed letter each count 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The last object key that starts before (`line`, `column`) (1-based, serde_json's position).
fn key_before(text: &str, line: usize, column: usize) -> Option<String> {
    let offset: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        + column;
    let head = &text[..offset.min(text.len())];
    // Scan the JSON strings; a string followed by ':' is a key.
    let (mut key, mut chars) = (None, head.char_indices().peekable());
    while let Some((start, c)) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars.by_ref() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        if head[end + 1..].trim_start().starts_with(':') {
            key = Some(head[start + 1..end].to_string());
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SwitchEncoderConfig;

    fn config() -> TrainingConfig {
        let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, 4);
        TrainingConfig::new(SwitchLmConfig::new(0, 16, encoder), TokenizerKind::Char)
    }

    fn field_of(config: &TrainingConfig) -> (&'static str, &'static str) {
        match config.validate() {
            Err(Error::Config { config, field, .. }) => (config, field),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(config().validate().is_ok());
        let cases: [(TrainingConfig, &str); 6] = [
            (config().with_batch_size(0), "batch_size"),
            (config().with_num_epochs(0), "num_epochs"),
            (config().with_patience(Some(0)), "patience"),
            (config().with_max_steps(Some(0)), "max_steps"),
            (config().with_lr(0.0), "lr"),
            (config().with_valid_fraction(1.0), "valid_fraction"),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(&config), ("TrainingConfig", field));
        }
        let mut short = config();
        short.model.max_seq_len = 1;
        assert_eq!(field_of(&short), ("SwitchLmConfig", "max_seq_len"));
        let mut bpe = config();
        bpe.tokenizer = TokenizerKind::Bpe { vocab_size: 10 };
        assert_eq!(field_of(&bpe), ("TokenizerKind::Bpe", "vocab_size"));
    }

    #[test]
    fn epochs_are_checkpoint_intervals() {
        // 3 passes of 100 windows in batches of 8: 300/8 → 38 steps, a pass 13 steps; by default
        // epochs of a tenth of the run (4 steps), so 10 epochs.
        let c = config().with_batch_size(8).with_num_epochs(3);
        let plan = c.epoch_plan(100);
        assert_eq!(
            (plan.epochs, plan.steps_per_epoch, plan.total_steps),
            (10, 4, 38)
        );
        assert_eq!(plan.steps_per_pass, 13);
        // Never longer than a pass.
        let c1 = config().with_batch_size(8).with_num_epochs(30);
        assert_eq!(c1.epoch_plan(100).steps_per_epoch, 13);
        // A step budget of 10 over 3 epochs: ⌈10/3⌉ = 4 steps each, rounded up to 12 in all.
        let b = c.clone().with_max_steps(Some(10));
        let plan = b.epoch_plan(100);
        assert_eq!(
            (plan.epochs, plan.steps_per_epoch, plan.total_steps),
            (3, 4, 12)
        );
        assert_eq!(plan.order, EpochOrder::Sample(32));
        // checkpoint_every sets the interval in both modes.
        let e = b.with_checkpoint_every(Some(5));
        assert_eq!(e.epoch_plan(100).epochs, 2);
        let p = c.with_checkpoint_every(Some(7)).epoch_plan(100);
        assert_eq!((p.epochs, p.steps_per_epoch), (6, 7));
        assert_eq!(
            p.order,
            EpochOrder::Passes {
                per_epoch: 56,
                total: 300
            }
        );
    }

    #[test]
    fn a_config_file_round_trips_and_typos_name_the_field() {
        let mut c = config().with_lr(1e-3);
        c.model.encoder.layer.moe.jitter = 0.05;
        let text = c.to_string();
        let back = TrainingConfig::from_json(&text).expect("a written config reads back");
        assert_eq!(back.to_string(), text);

        // A mistyped field deep in the tree: named with its path and the closest setting.
        let typo = text.replacen("\"jitter\"", "\"jiter\"", 1);
        let (field, message) = TrainingConfig::from_json(&typo).unwrap_err();
        assert_eq!(field, "model.encoder.layer.moe.jiter", "{message}");
        assert!(message.contains("did you mean `jitter`"), "{message}");

        // A value of the wrong type names its field.
        let wrong = text.replacen("\"batch_size\": 32", "\"batch_size\": \"big\"", 1);
        assert_ne!(wrong, text, "the test edits the batch size");
        let (field, message) = TrainingConfig::from_json(&wrong).unwrap_err();
        assert_eq!(field, "batch_size", "{message}");

        // A complete file must be complete; a file over a base may leave settings out.
        let partial = r#"{"lr": 0.01, "model": {"encoder": {"layer": {"moe": {"top_k": 2}}}},
            "tokenizer": {"Bpe": {"vocab_size": 300}}}"#;
        let (_, message) = TrainingConfig::from_json(partial).unwrap_err();
        assert!(message.contains("missing field"), "{message}");
        let base = config().with_batch_size(7);
        let over = TrainingConfig::from_json_over(partial, &base).expect("the base fills in");
        assert_eq!((over.batch_size, over.lr), (7, 0.01));
        assert_eq!(over.model.encoder.moe().top_k, 2);
        assert_eq!(
            over.model.encoder.moe().num_experts,
            4,
            "kept from the base"
        );
        assert_eq!(over.tokenizer, TokenizerKind::Bpe { vocab_size: 300 });
        let (field, _) =
            TrainingConfig::from_json_over(r#"{"model": {"max_seq_lne": 8}}"#, &base).unwrap_err();
        assert_eq!(field, "model.max_seq_lne");

        // A config.json of an earlier version (without the settings added since) still reads.
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old["model"]
            .as_object_mut()
            .unwrap()
            .remove("tie_embeddings");
        let moe = old["model"]["encoder"]["layer"]["moe"]
            .as_object_mut()
            .unwrap();
        for (path, _) in NEWER_FIELDS.iter().skip(1) {
            moe.remove(path.rsplit('.').next().unwrap());
        }
        let older = TrainingConfig::from_json(&old.to_string()).expect("an older file reads");
        assert_eq!(older.to_string(), text);

        assert_eq!(edit_distance("jiter", "jitter"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
