//! Config validation: each bad value is named with its field and value, `init` panics with the
//! same message, combinations that cannot work are refused (expert choice in a causal LM), and
//! the parameter count a config predicts is the built model's.

use switch_moe::{
    Error, RoutingMode, SwitchEncoderConfig, SwitchEncoderLayerConfig, SwitchFeedForwardConfig,
    SwitchLmConfig,
};

fn field_and_value(result: switch_moe::Result<()>) -> (String, String, String) {
    match result {
        Err(e) => {
            let msg = e.to_string();
            match e {
                Error::Config { field, value, .. } => (field.to_string(), value, msg),
                other => panic!("expected a config error, got {other}"),
            }
        }
        Ok(()) => panic!("expected a config error"),
    }
}

#[test]
fn moe_config_errors_name_field_and_value() {
    let base = || SwitchFeedForwardConfig::new(8, 16, 4);
    assert!(base().validate().is_ok());
    let cases = [
        (
            SwitchFeedForwardConfig::new(8, 16, 0).validate(),
            "num_experts",
            "0",
        ),
        (base().with_top_k(0).validate(), "top_k", "0"),
        (base().with_top_k(5).validate(), "top_k", "5"),
        (
            base().with_capacity_factor(0.0).validate(),
            "capacity_factor",
            "0",
        ),
        (
            base().with_capacity_factor(-1.5).validate(),
            "capacity_factor",
            "-1.5",
        ),
        (
            base().with_eval_capacity_factor(0.0).validate(),
            "eval_capacity_factor",
            "0",
        ),
        (
            base().with_expert_dropout(1.0).validate(),
            "expert_dropout",
            "1",
        ),
        (
            base().with_expert_dropout(-0.1).validate(),
            "expert_dropout",
            "-0.1",
        ),
        (base().with_jitter(1.0).validate(), "jitter", "1"),
        (base().with_init_scale(0.0).validate(), "init_scale", "0"),
        (
            base()
                .with_activation(burn::nn::activation::ActivationConfig::Tanh)
                .validate(),
            "activation",
            "Tanh",
        ),
    ];
    for (result, field, value) in cases {
        let (f, v, msg) = field_and_value(result);
        assert_eq!((f.as_str(), v.as_str()), (field, value), "{msg}");
        assert!(msg.contains("SwitchFeedForwardConfig"), "{msg}");
        assert!(msg.contains(field) && msg.contains(value), "{msg}");
    }
}

#[test]
fn layer_and_encoder_config_errors() {
    let (f, v, msg) = field_and_value(SwitchEncoderLayerConfig::new(10, 16, 3, 4).validate());
    assert_eq!((f.as_str(), v.as_str()), ("n_heads", "3"), "{msg}");
    assert!(msg.contains("d_model = 10"), "{msg}");

    let layer = || SwitchEncoderLayerConfig::new(8, 16, 2, 4);
    let (f, v, _) = field_and_value(layer().with_dropout(1.2).validate());
    assert_eq!((f.as_str(), v.as_str()), ("dropout", "1.2"));
    // MoE settings live in the nested SwitchFeedForwardConfig, whose name the error carries.
    let (f, v, msg) = field_and_value(layer().map_moe(|m| m.with_expert_dropout(1.0)).validate());
    assert_eq!((f.as_str(), v.as_str()), ("expert_dropout", "1"));
    assert!(
        msg.contains("SwitchFeedForwardConfig.expert_dropout"),
        "{msg}"
    );
    let (f, _, _) = field_and_value(layer().map_moe(|m| m.with_top_k(5)).validate());
    assert_eq!(f, "top_k");

    let (f, v, msg) = field_and_value(SwitchEncoderConfig::new(8, 16, 2, 1, 4).validate());
    assert_eq!((f.as_str(), v.as_str()), ("moe_every", "2"), "{msg}");
    let (f, v, _) = field_and_value(
        SwitchEncoderConfig::new(8, 16, 2, 2, 0)
            .with_moe_every(1)
            .validate(),
    );
    assert_eq!((f.as_str(), v.as_str()), ("num_experts", "0"));
    let (f, _, _) = field_and_value(SwitchEncoderConfig::new(8, 16, 2, 0, 4).validate());
    assert_eq!(f, "n_layers");
    assert!(
        SwitchFeedForwardConfig::new(8, 16, 4)
            .with_top_k(4)
            .validate()
            .is_ok()
    );
}

#[test]
#[should_panic(expected = "invalid config: SwitchFeedForwardConfig.top_k = 0")]
fn init_panics_with_the_validate_message() {
    let device = Default::default();
    let _ = SwitchFeedForwardConfig::new(8, 16, 4)
        .with_top_k(0)
        .init::<switch_moe::backend::TestBackend>(&device);
}

#[test]
fn lm_parameter_count_from_the_config_matches_the_built_model() {
    use burn::module::Module;
    let device = Default::default();
    for encoder in [
        SwitchEncoderConfig::new(8, 16, 2, 3, 4),
        SwitchEncoderConfig::new(8, 12, 2, 2, 3)
            .with_moe_every(1)
            .map_moe(|m| {
                m.with_bias(true)
                    .with_num_shared_experts(2)
                    .with_shared_gate(true)
                    .with_expert_bias_rate(1e-3)
            }),
        // Gated experts, every layer sparse.
        SwitchEncoderConfig::new(8, 12, 2, 2, 3)
            .with_moe_every(1)
            .map_moe(|m| m.with_swiglu().with_num_shared_experts(1)),
        // A parameter-matched dense baseline: one wide expert, narrower dense layers.
        SwitchEncoderConfig::new(8, 48, 2, 4, 1).with_dense_d_ff(Some(12)),
    ] {
        let config = switch_moe::SwitchLmConfig::new(11, 7, encoder);
        let model = config.init::<switch_moe::backend::TestBackend>(&device);
        assert_eq!(config.num_params(), model.num_params());
    }
}

#[test]
fn the_causal_lm_refuses_expert_choice() {
    let encoder = SwitchEncoderConfig::new(16, 32, 2, 2, 4)
        .map_moe(|m| m.with_routing(RoutingMode::ExpertChoice));
    assert!(
        encoder.validate().is_ok(),
        "a bidirectional encoder may use it"
    );
    let err = SwitchLmConfig::new(10, 8, encoder)
        .validate()
        .expect_err("the LM must refuse expert choice")
        .to_string();
    for needle in ["routing", "ExpertChoice", "future", "token choice"] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
}

#[test]
fn invalid_option_combinations_name_the_field() {
    let base = || SwitchFeedForwardConfig::new(8, 16, 4);
    let msg = |c: SwitchFeedForwardConfig| c.validate().expect_err("invalid").to_string();
    assert!(msg(base().with_expert_bias_rate(-1.0)).contains("expert_bias_rate"));
    assert!(msg(base().with_shared_gate(true)).contains("shared_gate"));
    let ec = || base().with_routing(RoutingMode::ExpertChoice);
    assert!(msg(ec().with_expert_bias_rate(1e-3)).contains("expert_bias_rate"));
    assert!(msg(ec().with_dropless(true)).contains("dropless"));
}
