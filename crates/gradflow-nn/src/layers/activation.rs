//! Every activation, declared once. Each entry below is the whole of an
//! activation outside the core op: its PyTorch class name (the variant), the
//! name the command line takes, its constructor arguments with PyTorch's
//! defaults, the init gain of `torch.nn.init.calculate_gain`, where its output
//! saturates, a one-line description, and the op it applies. The model file
//! reader and writer, the CLI's lists, the diagnostics and the playground all
//! read these entries, so adding an activation means adding its op (with the
//! derivative) in the core, one entry here, and its test.

use crate::module::{Ctx, Module};
use crate::spec::{BuildContext, Keys, LayerDecl};
use gradflow::{Result, Tensor};
use serde::{Deserialize, Serialize};
use std::f64::consts::SQRT_2;

/// Where an activation's derivative vanishes, judged on its output: the rule
/// the training diagnostics and the playground share.
#[derive(Debug, Clone, Copy)]
pub enum Saturation {
    /// Not reported: the derivative never gets close to 0 (or no rule is declared).
    Never,
    /// Outputs `y` with `flat(y)` sit where the derivative is nearly 0; a layer
    /// with many of them learns slowly.
    Saturates(fn(f64) -> bool),
    /// Outputs `y` with `flat(y)` have derivative exactly 0; a unit flat on a whole
    /// batch is dead (it passes back no gradient at all).
    Dies(fn(f64) -> bool),
}

/// GELU's `approximate` argument, as PyTorch spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approximate {
    /// The exact x·Φ(x).
    #[default]
    None,
    /// The tanh approximation.
    Tanh,
}

/// A constructor argument's type, as a model file spells it.
pub trait ArgValue {
    /// Read from a model file; the error (`Error::Spec`) says what `key` must be.
    fn from_toml(key: &str, value: &toml::Value) -> crate::Result<Self>
    where
        Self: Sized;
    /// The TOML text of the value, or `None` where a model file leaves it out.
    fn to_toml(&self) -> Option<String>;
    /// The value for the playground's and the CLI's lists.
    fn to_json(&self) -> serde_json::Value;
}

impl ArgValue for f64 {
    fn from_toml(key: &str, value: &toml::Value) -> crate::Result<f64> {
        match value {
            toml::Value::Float(f) if f.is_finite() => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as f64),
            v => Err(crate::Error::Spec(format!("'{key}' must be a number, got {v}"))),
        }
    }
    fn to_toml(&self) -> Option<String> {
        Some(format!("{self:?}"))
    }
    fn to_json(&self) -> serde_json::Value {
        (*self).into()
    }
}

impl ArgValue for Approximate {
    fn from_toml(key: &str, value: &toml::Value) -> crate::Result<Approximate> {
        match value {
            toml::Value::String(s) if s == "none" => Ok(Approximate::None),
            toml::Value::String(s) if s == "tanh" => Ok(Approximate::Tanh),
            v => Err(crate::Error::Spec(format!(
                "'{key}' must be \"none\" or \"tanh\", got {v}"
            ))),
        }
    }
    fn to_toml(&self) -> Option<String> {
        (*self == Approximate::Tanh).then(|| "\"tanh\"".to_string())
    }
    fn to_json(&self) -> serde_json::Value {
        match self {
            Approximate::None => "none".into(),
            Approximate::Tanh => "tanh".into(),
        }
    }
}

/// One constructor argument of a declaration: its name and PyTorch's default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArgInfo {
    /// The keyword, as in PyTorch and in model files.
    pub name: &'static str,
    /// PyTorch's default.
    pub default: serde_json::Value,
}

/// What a declaration says about an activation, for lists (the CLI's help, the playground).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivationInfo {
    /// PyTorch's class name (`LeakyReLU`), also the model file's `type`.
    pub name: &'static str,
    /// The command line's name (`leaky_relu`).
    pub cli_name: &'static str,
    /// One line on what it computes.
    pub description: &'static str,
    /// Constructor arguments with their defaults.
    pub args: Vec<ArgInfo>,
    /// Whether the diagnostics report its saturated outputs.
    pub saturates: bool,
    /// Whether the diagnostics report its dead units.
    pub dies: bool,
}

/// Normalizes a name for lookup: case, `_` and `-` do not matter.
fn normalized(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '-'], "")
}

macro_rules! activations {
    ($(
        #[doc = $description:literal]
        $variant:ident $(($($arg:ident: $ty:ty = $default:expr),+))? {
            cli: $cli:literal $(| $alias:literal)*,
            gain: $gain:expr,
            saturation: $saturation:expr,
            forward: |$x:ident| $forward:expr $(,)?
        }
    )+) => {
        /// An activation function as a layer, with PyTorch's arguments (in
        /// PyTorch's order) and defaults.
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Activation {
            $(#[doc = $description] $variant $(($($ty),+))?,)+
        }

        impl Activation {
            /// Every activation with PyTorch's defaults, in declaration order.
            pub const ALL: &'static [Activation] = &[$(Activation::$variant $(($($default),+))?),+];

            /// The PyTorch class name (`LeakyReLU`), also the model file's `type`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Activation::$variant { .. } => stringify!($variant),)+
                }
            }

            /// The command line's name (`leaky_relu`).
            pub fn cli_name(&self) -> &'static str {
                match self {
                    $(Activation::$variant { .. } => $cli,)+
                }
            }

            /// One line on what it computes.
            pub fn description(&self) -> &'static str {
                match self {
                    $(Activation::$variant { .. } => $description.trim(),)+
                }
            }

            /// By class or command-line name (case, `_` and `-` ignored), with default arguments.
            pub fn parse(name: &str) -> Option<Activation> {
                let name = normalized(name);
                Activation::ALL.iter().copied().find(|a| {
                    let aliases: &[&str] = match a {
                        $(Activation::$variant { .. } => &[$($alias),*],)+
                    };
                    normalized(a.name()) == name || normalized(a.cli_name()) == name || aliases.contains(&name.as_str())
                })
            }

            /// The constructor arguments and their values, in PyTorch's order.
            pub fn args(&self) -> Vec<(&'static str, &dyn ArgValue)> {
                match self {
                    $(Activation::$variant $(($($arg),+))? => vec![$($((stringify!($arg), $arg as &dyn ArgValue)),+)?],)+
                }
            }

            /// This activation (chosen by its `type`) with the arguments that
            /// `get` finds (in a model file's table), PyTorch's defaults for the others.
            pub(crate) fn read_args<'a>(
                self,
                mut get: impl FnMut(&'static str) -> Option<&'a toml::Value>,
            ) -> crate::Result<Activation> {
                let _ = &mut get;
                Ok(match self {
                    $(Activation::$variant $(($($arg),+))? => Activation::$variant $(($(
                        match get(stringify!($arg)) {
                            None => $arg,
                            Some(v) => <$ty as ArgValue>::from_toml(stringify!($arg), v)?,
                        }
                    ),+))?,)+
                })
            }

            /// The gain PyTorch's `calculate_gain` gives this activation: the factor
            /// by which an initializer scales the weights of the layer before it.
            pub fn gain(&self) -> f64 {
                match *self {
                    $(Activation::$variant $(($($arg),+))? => { $($(let _ = $arg;)+)? $gain },)+
                }
            }

            /// Where the derivative vanishes, judged on the output.
            pub fn saturation(&self) -> Saturation {
                match self {
                    $(Activation::$variant { .. } => $saturation,)+
                }
            }

            /// Apply to a tensor.
            pub fn apply(&self, input: &Tensor) -> Tensor {
                match *self {
                    $(Activation::$variant $(($($arg),+))? => { let $x = input; $forward },)+
                }
            }
        }
    };
}

activations! {
    /// max(0, x): the default for hidden layers; units stuck below 0 die.
    ReLU {
        cli: "relu",
        gain: SQRT_2,
        saturation: Saturation::Dies(|y| y <= 0.0),
        forward: |x| x.relu(),
    }
    /// x for x > 0, negative_slope·x below: a ReLU whose units cannot die.
    LeakyReLU(negative_slope: f64 = 0.01) {
        cli: "leaky_relu",
        gain: (2.0 / (1.0 + negative_slope * negative_slope)).sqrt(),
        saturation: Saturation::Never,
        forward: |x| x.leaky_relu(negative_slope),
    }
    /// x for x > 0, alpha·(eˣ − 1) below: smooth, with negative outputs that centre the mean.
    ELU(alpha: f64 = 1.0) {
        cli: "elu",
        gain: SQRT_2,
        saturation: Saturation::Never,
        forward: |x| x.elu(alpha),
    }
    /// A scaled ELU whose fixed point keeps activations normalized (with LeCun-normal init).
    SELU {
        cli: "selu",
        gain: 0.75,
        saturation: Saturation::Never,
        forward: |x| x.selu(),
    }
    /// x·Φ(x), the smooth ReLU of transformers.
    GELU(approximate: Approximate = Approximate::None) {
        cli: "gelu",
        gain: SQRT_2,
        saturation: Saturation::Never,
        forward: |x| x.apply_unary(gradflow::ops::activation::Gelu {
            tanh_approx: approximate == Approximate::Tanh,
        }),
    }
    /// x·σ(x) (swish): smooth and non-monotonic.
    SiLU {
        cli: "silu" | "swish",
        gain: SQRT_2,
        saturation: Saturation::Never,
        forward: |x| x.silu(),
    }
    /// 1/(1 + e⁻ˣ): squashes to (0, 1) and saturates at both ends.
    Sigmoid {
        cli: "sigmoid",
        gain: 1.0,
        saturation: Saturation::Saturates(|y| !(0.01..=0.99).contains(&y)),
        forward: |x| x.sigmoid(),
    }
    /// tanh(x): squashes to (−1, 1), zero-centred, saturates at both ends.
    Tanh {
        cli: "tanh",
        gain: 5.0 / 3.0,
        saturation: Saturation::Saturates(|y| y.abs() > 0.99),
        forward: |x| x.tanh(),
    }
    /// log(1 + e^(beta·x))/beta, linear above threshold: a smooth ReLU.
    Softplus(beta: f64 = 1.0, threshold: f64 = 20.0) {
        cli: "softplus",
        gain: 1.0,
        saturation: Saturation::Never,
        forward: |x| x.apply_unary(gradflow::ops::activation::Softplus { beta, threshold }),
    }
    /// x/(1 + |x|): like tanh with polynomial tails.
    Softsign {
        cli: "softsign",
        gain: 1.0,
        saturation: Saturation::Never,
        forward: |x| x.softsign(),
    }
    /// x clamped to [min_val, max_val]: a cheap tanh.
    Hardtanh(min_val: f64 = -1.0, max_val: f64 = 1.0) {
        cli: "hardtanh",
        gain: 1.0,
        saturation: Saturation::Never,
        forward: |x| x.hardtanh(min_val, max_val),
    }
}

impl Activation {
    /// Every activation's declaration, for lists: the CLI's help and the playground's menus.
    pub fn registry() -> Vec<ActivationInfo> {
        Activation::ALL
            .iter()
            .map(|a| ActivationInfo {
                name: a.name(),
                cli_name: a.cli_name(),
                description: a.description(),
                args: a
                    .args()
                    .into_iter()
                    .map(|(name, v)| ArgInfo {
                        name,
                        default: v.to_json(),
                    })
                    .collect(),
                saturates: matches!(a.saturation(), Saturation::Saturates(_)),
                dies: matches!(a.saturation(), Saturation::Dies(_)),
            })
            .collect()
    }

    /// Every class name, comma-separated (for messages).
    pub fn names() -> String {
        Activation::ALL
            .iter()
            .map(Activation::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every command-line name, comma-separated (for help texts).
    pub fn cli_names() -> String {
        Activation::ALL
            .iter()
            .map(Activation::cli_name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Module for Activation {
    fn kind(&self) -> &'static str {
        self.name()
    }
    fn forward(&self, x: &Tensor, _ctx: &mut Ctx) -> Result<Tensor> {
        Ok(self.apply(x))
    }
    fn output_shape(&self, input: &[usize]) -> crate::Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn as_activation(&self) -> Option<Activation> {
        Some(*self)
    }
}

/// Every activation is a model-file layer under its class name, with its
/// arguments as keys (those at PyTorch's default left out when written).
impl LayerDecl for Activation {
    fn types() -> Vec<&'static str> {
        Activation::ALL.iter().map(Activation::name).collect()
    }
    fn description() -> &'static str {
        "an activation function (see the activations list)"
    }
    fn read(ty: &str, k: &mut Keys<'_>) -> crate::Result<Activation> {
        match Activation::ALL.iter().find(|a| a.name().eq_ignore_ascii_case(ty)) {
            Some(a) => a.read_args(|key| k.get(key)).or_else(|e| k.err(e)),
            None => k.err(format!("unknown activation '{ty}'")),
        }
    }
    fn kind(&self) -> &'static str {
        self.name()
    }
    fn write(&self, s: &mut String) {
        for (key, value) in self.args() {
            if let Some(text) = value.to_toml() {
                s.push_str(&format!("{key} = {text}\n"));
            }
        }
    }
    fn gain_before(&self) -> Option<f64> {
        Some(self.gain())
    }
    fn build(&self, _shape: &[usize], _cx: &mut BuildContext) -> crate::Result<Box<dyn Module>> {
        Ok(Box::new(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declaration_parses_by_both_names_and_keeps_its_defaults() {
        for a in Activation::ALL {
            assert_eq!(Activation::parse(a.name()), Some(*a));
            assert_eq!(Activation::parse(a.cli_name()), Some(*a));
        }
        assert_eq!(Activation::parse("Leaky-ReLU"), Some(Activation::LeakyReLU(0.01)));
        assert_eq!(Activation::parse("swish"), Some(Activation::SiLU));
        assert_eq!(Activation::parse("bogus"), None);
    }

    #[test]
    fn gains_are_pytorchs() {
        assert_eq!(Activation::ReLU.gain(), SQRT_2);
        assert_eq!(Activation::Tanh.gain(), 5.0 / 3.0);
        assert_eq!(Activation::SELU.gain(), 0.75);
        assert!((Activation::LeakyReLU(0.2).gain() - (2.0f64 / 1.04).sqrt()).abs() < 1e-15);
        assert_eq!(Activation::Sigmoid.gain(), 1.0);
    }

    #[test]
    fn registry_lists_arguments_with_defaults() {
        let reg = Activation::registry();
        let hardtanh = reg.iter().find(|i| i.name == "Hardtanh").unwrap();
        assert_eq!(hardtanh.args.len(), 2);
        assert_eq!(hardtanh.args[0].name, "min_val");
        assert_eq!(hardtanh.args[0].default, serde_json::json!(-1.0));
        let gelu = reg.iter().find(|i| i.name == "GELU").unwrap();
        assert_eq!(gelu.args[0].default, serde_json::json!("none"));
        assert!(reg.iter().find(|i| i.name == "Sigmoid").unwrap().saturates);
        assert!(reg.iter().find(|i| i.name == "ReLU").unwrap().dies);
        assert!(reg.iter().all(|i| !i.description.is_empty()));
    }

    #[test]
    fn saturation_rules_judge_outputs() {
        let Saturation::Saturates(flat) = Activation::Sigmoid.saturation() else {
            panic!("sigmoid saturates")
        };
        assert!(flat(0.995) && flat(0.001) && !flat(0.5));
        let Saturation::Dies(dead) = Activation::ReLU.saturation() else {
            panic!("relu dies")
        };
        assert!(dead(0.0) && !dead(0.1));
    }
}
