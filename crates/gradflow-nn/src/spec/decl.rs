//! What a model-file layer declares, and the build that walks a list of them.
//!
//! Each layer type is one [`LayerDecl`]: a struct of its constructor
//! arguments, in the layer's own file, next to its module. The registration
//! list in [`super`] (`layer_specs!`) turns the declarations into the
//! [`LayerSpec`] enum; the reader, the writer, the checks and the build
//! dispatch through [`LayerSpec::decl`], so they hold no per-layer code.

use super::keys::Keys;
use super::{elements, BuildOptions, LayerSpec, MAX_DIM, MAX_SAMPLE_ELEMENTS};
use crate::error::{Error, Result};
use crate::init::Init;
use crate::layers::Sequential;
use crate::module::Module;
use gradflow::DType;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One model-file layer type: its PyTorch class name(s), how its keys are
/// read and written, what it checks before anything is allocated, and how it
/// is built. Implemented by the struct of its constructor arguments.
pub trait LayerDecl: std::fmt::Debug {
    /// The model file's `type` values it reads (PyTorch's class names; case is ignored).
    fn types() -> Vec<&'static str>
    where
        Self: Sized;
    /// One line on what the layer computes, for lists.
    fn description() -> &'static str
    where
        Self: Sized;
    /// The arguments from a layer's table (`ty` is the `type` it was chosen by),
    /// with the defaults and the checks of PyTorch's constructor.
    fn read(ty: &str, keys: &mut Keys<'_>) -> Result<Self>
    where
        Self: Sized;
    /// The class name written as `type` and shown in messages.
    fn kind(&self) -> &'static str;
    /// The keys after `type`, in the form [`read`](Self::read) takes back.
    fn write(&self, s: &mut String);
    /// Nested layer lists (`[[layer.body]]`), written after the layer's own keys.
    fn nested(&self) -> Vec<(&'static str, &[LayerSpec])> {
        Vec::new()
    }
    /// Every size, each checked against [`MAX_DIM`] before any shape
    /// arithmetic (specs built in code skip the reader's checks).
    fn sizes(&self) -> Vec<(&'static str, usize)> {
        Vec::new()
    }
    /// Refuses an input of the wrong rank (an [`Error::Shape`] with the
    /// reason), before [`parameter_count`](Self::parameter_count) indexes it.
    fn check_input(&self, _shape: &[usize]) -> Result<()> {
        Ok(())
    }
    /// Parameters and buffers it allocates on an input of `shape` (already
    /// checked), or `None` on overflow; nested lists count their own.
    fn parameter_count(&self, _shape: &[usize]) -> Option<usize> {
        Some(0)
    }
    /// The init gain this layer sets for the weighted layer before it: an
    /// activation's gain, 1 for another weighted layer, `None` to look further.
    fn gain_before(&self) -> Option<f64> {
        None
    }
    /// The module on a per-sample input of `shape` (checked); weights are drawn
    /// from `cx`, nested lists built through [`BuildContext::nested`].
    fn build(&self, shape: &[usize], cx: &mut BuildContext) -> Result<Box<dyn Module>>;
}

/// A layer type for lists (the playground, help texts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerInfo {
    /// The model file's `type` values.
    pub types: Vec<&'static str>,
    /// One line on what it computes.
    pub description: &'static str,
}

/// Generates [`LayerSpec`] from the registration list: one variant per
/// declaration, and the lookups that dispatch to them.
macro_rules! layer_specs {
    ($($(#[doc = $doc:literal])* $variant:ident($spec:ty),)+) => {
        /// One layer of a model file, with its constructor arguments.
        #[derive(Debug, Clone, PartialEq)]
        pub enum LayerSpec {
            $($(#[doc = $doc])* $variant($spec),)+
        }

        $(impl From<$spec> for LayerSpec {
            fn from(spec: $spec) -> LayerSpec {
                LayerSpec::$variant(spec)
            }
        })+

        impl LayerSpec {
            /// The declaration this layer is.
            pub fn decl(&self) -> &dyn LayerDecl {
                match self {
                    $(LayerSpec::$variant(spec) => spec,)+
                }
            }

            /// Reads the layer whose declaration takes `ty`; `None` if none does.
            fn read(ty: &str, keys: &mut Keys<'_>) -> Option<Result<LayerSpec>> {
                $(if <$spec as LayerDecl>::types().iter().any(|n| n.eq_ignore_ascii_case(ty)) {
                    return Some(<$spec as LayerDecl>::read(ty, keys).map(LayerSpec::$variant));
                })+
                None
            }

            /// Every layer type, in registration order.
            pub fn registry() -> Vec<LayerInfo> {
                vec![$(LayerInfo {
                    types: <$spec as LayerDecl>::types(),
                    description: <$spec as LayerDecl>::description(),
                },)+]
            }
        }
    };
}
pub(crate) use layer_specs;

impl LayerSpec {
    /// The PyTorch class name.
    pub fn kind(&self) -> &'static str {
        self.decl().kind()
    }

    /// Every model-file `type`, in registration order (for messages).
    pub fn types() -> Vec<&'static str> {
        LayerSpec::registry().into_iter().flat_map(|info| info.types).collect()
    }

    /// Reads one `[[layer]]` table; `ctx` names it in errors (`m.toml: layer 2`).
    pub(crate) fn parse(table: &super::keys::Table, ctx: String) -> Result<LayerSpec> {
        let Some(toml::Value::String(ty)) = table.get("type") else {
            return Err(Error::Spec(format!("{ctx}: missing string key 'type'")));
        };
        let mut keys = Keys::new(table, format!("{ctx} ({ty})"));
        let Some(spec) = LayerSpec::read(ty, &mut keys) else {
            return Err(Error::Spec(format!(
                "{ctx}: unknown layer type '{ty}' (known: {})",
                LayerSpec::types().join(", ")
            )));
        };
        let spec = spec?;
        keys.finish()?;
        Ok(spec)
    }
}

/// The state of one [`ModelSpec::build`](super::ModelSpec::build): weights
/// drawn in layer order, nested lists included, the parameters allocated so
/// far, and what the layer being built needs to know about its place.
pub struct BuildContext {
    rng: ChaCha8Rng,
    opts: BuildOptions,
    allocated: usize,
    limit: usize,
    /// The gain of the activation after the layer being built.
    gain: f64,
    /// The path of the layer being built (`2`, `2.body.0`).
    path: String,
}

impl BuildContext {
    /// A build with `opts` that allocates at most `limit` parameters and buffers
    /// (a layer can be built alone this way, as its tests do).
    pub fn new(opts: BuildOptions, limit: usize) -> BuildContext {
        BuildContext {
            rng: gradflow::seeded_rng(opts.seed),
            opts,
            allocated: 0,
            limit,
            gain: 1.0,
            path: String::new(),
        }
    }

    /// The source of the initial weights.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// The element type of the parameters.
    pub fn dtype(&self) -> DType {
        self.opts.dtype
    }

    /// A weighted layer's initializer (its own, else the model's) and the
    /// gain that initializer takes for the activation after the layer.
    pub fn weight_init(&self, own: Option<Init>) -> (Init, f64) {
        let init = own.unwrap_or(self.opts.init);
        (init, crate::init::gain_for(init, self.gain))
    }

    /// The nested list `[[layer.KEY]]` of the layer being built, on input
    /// `shape`, and its output shape; its errors name its layers (`layer 2.body.0`).
    pub fn nested(&mut self, key: &str, layers: &[LayerSpec], shape: &[usize]) -> Result<(Sequential, Vec<usize>)> {
        let path = self.path.clone();
        let built = self.stack(layers, shape, &format!("{path}.{key}."));
        self.path = path;
        built
    }

    /// The layers on a per-sample `input`, and their output shape; errors name
    /// each layer by `prefix` and its index.
    pub(crate) fn stack(
        &mut self,
        layers: &[LayerSpec],
        input: &[usize],
        prefix: &str,
    ) -> Result<(Sequential, Vec<usize>)> {
        let mut shape = input.to_vec();
        let mut net = Sequential::new();
        for (i, l) in layers.iter().enumerate() {
            let decl = l.decl();
            let ctx = |e: Error| Error::Spec(format!("layer {prefix}{i} ({}): {e}", decl.kind()));
            check_sizes(decl).map_err(ctx)?;
            decl.check_input(&shape).map_err(ctx)?;
            self.allocated = budget(decl, &shape, self.allocated, self.limit).map_err(ctx)?;
            self.gain = gain_after(layers, i);
            self.path = format!("{prefix}{i}");
            let layer = decl.build(&shape, self)?;
            shape = layer.output_shape(&shape).map_err(ctx)?;
            if elements(&shape).is_none_or(|n| n > MAX_SAMPLE_ELEMENTS) {
                return Err(ctx(Error::Shape(format!(
                    "output shape {shape:?} has more than {MAX_SAMPLE_ELEMENTS} values per sample"
                ))));
            }
            net.layers.push(layer);
        }
        Ok((net, shape))
    }
}

/// The init gain for layer `i` of `layers`: that of the activation that
/// follows it (1 when another weighted layer or nothing comes first).
fn gain_after(layers: &[LayerSpec], i: usize) -> f64 {
    layers[i + 1..]
        .iter()
        .find_map(|l| l.decl().gain_before())
        .unwrap_or(1.0)
}

/// Every size of one layer against [`MAX_DIM`].
fn check_sizes(decl: &dyn LayerDecl) -> Result<()> {
    match decl.sizes().into_iter().find(|(_, v)| *v > MAX_DIM) {
        Some((key, v)) => Err(Error::Shape(format!("'{key}' = {v} is too large (at most {MAX_DIM})"))),
        None => Ok(()),
    }
}

/// Adds the layer's allocation on input `shape` to `allocated`, or explains
/// why that would exceed `limit`.
fn budget(decl: &dyn LayerDecl, shape: &[usize], allocated: usize, limit: usize) -> Result<usize> {
    match decl
        .parameter_count(shape)
        .and_then(|n| Some((n, allocated.checked_add(n)?)))
    {
        Some((_, total)) if total <= limit => Ok(total),
        Some((n, _)) => Err(Error::Shape(format!(
            "{n} parameters on input {shape:?} would make the model larger than the limit of {limit}"
        ))),
        None => Err(Error::Shape(format!(
            "its parameter count on input {shape:?} overflows (the limit is {limit})"
        ))),
    }
}
