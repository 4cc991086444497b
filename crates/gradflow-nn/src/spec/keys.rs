//! Reading a layer's keys from its model-file table, with the checks every
//! declaration shares (sizes at most [`MAX_DIM`], unknown keys refused), and
//! writing them back in the same format.

use super::{parse_layer, LayerSpec, MAX_DIM};
use crate::error::{Error, Result};
use crate::init::Init;
use std::fmt::Write as _;

/// A TOML table, as the model file's parser gives it.
pub type Table = toml::map::Map<String, toml::Value>;

/// One layer's table while its declaration reads it: every key read is
/// remembered, so that a key no reader asked for is reported as unknown.
/// Errors name the layer (`m.toml: layer 2 (Linear): ...`).
pub struct Keys<'a> {
    table: &'a Table,
    ctx: String,
    used: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    /// A reader of `table`; `ctx` starts every error (`m.toml: layer 2 (Linear)`),
    /// so a declaration can be read alone, as its tests do.
    pub fn new(table: &'a Table, ctx: String) -> Keys<'a> {
        Keys {
            table,
            ctx,
            used: Vec::new(),
        }
    }
    /// An error about this layer: `FILE: layer N (Type): msg`.
    pub fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T> {
        Err(Error::Spec(format!("{}: {msg}", self.ctx)))
    }
    /// The raw value of `key`, if present (marking it as known).
    pub fn get(&mut self, key: &'static str) -> Option<&'a toml::Value> {
        self.used.push(key);
        self.table.get(key)
    }
    /// A positive size of at most [`MAX_DIM`]; `default` `None` makes it required
    /// (and `Some(0)` allows 0).
    pub fn usize(&mut self, key: &'static str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.map_or_else(|| self.err(format!("missing key '{key}'")), Ok),
            Some(toml::Value::Integer(i)) if *i > MAX_DIM as i64 => self.err(too_large(key, *i)),
            Some(toml::Value::Integer(i)) if *i > 0 || (*i == 0 && default == Some(0)) => Ok(*i as usize),
            Some(v) => self.err(format!("'{key}' must be a positive integer, got {v}")),
        }
    }
    /// A size given as `5` or `[5, 3]`, as PyTorch's 2-d layers take it.
    pub fn pair(
        &mut self,
        key: &'static str,
        default: Option<(usize, usize)>,
        allow_zero: bool,
    ) -> Result<(usize, usize)> {
        let ok = |i: i64| i > 0 || (allow_zero && i == 0);
        let value = self.get(key);
        let huge = match value {
            Some(toml::Value::Integer(i)) => Some(*i),
            Some(toml::Value::Array(a)) => a.iter().filter_map(toml::Value::as_integer).max(),
            _ => None,
        }
        .filter(|&i| i > MAX_DIM as i64);
        if let Some(i) = huge {
            return self.err(too_large(key, i));
        }
        match value {
            None => default.map_or_else(|| self.err(format!("missing key '{key}'")), Ok),
            Some(toml::Value::Integer(i)) if ok(*i) => Ok((*i as usize, *i as usize)),
            Some(toml::Value::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
                (toml::Value::Integer(x), toml::Value::Integer(y)) if ok(*x) && ok(*y) => {
                    Ok((*x as usize, *y as usize))
                }
                _ => self.err(format!("'{key}' must be an integer or a pair of integers")),
            },
            Some(v) => self.err(format!(
                "'{key}' must be a {}integer or a pair of integers, got {v}",
                if allow_zero { "non-negative " } else { "positive " }
            )),
        }
    }
    /// A finite number (an integer is taken as one).
    pub fn float(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Float(f)) if f.is_finite() => Ok(*f),
            Some(toml::Value::Integer(i)) => Ok(*i as f64),
            Some(v) => self.err(format!("'{key}' must be a number, got {v}")),
        }
    }
    /// A non-negative number that may be left out (a per-layer λ).
    pub fn opt_float(&mut self, key: &'static str) -> Result<Option<f64>> {
        if self.table.contains_key(key) {
            let v = self.float(key, 0.0)?;
            if v < 0.0 {
                return self.err(format!("'{key}' must not be negative"));
            }
            Ok(Some(v))
        } else {
            self.used.push(key);
            Ok(None)
        }
    }
    /// `true` or `false`.
    pub fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => self.err(format!("'{key}' must be true or false, got {v}")),
        }
    }
    /// The per-layer `init` key, by initializer name.
    pub fn init(&mut self) -> Result<Option<Init>> {
        match self.get("init") {
            None => Ok(None),
            Some(toml::Value::String(s)) => Init::parse(s).map(Some).or_else(|e| self.err(e)),
            Some(v) => self.err(format!("'init' must be a string, got {v}")),
        }
    }
    /// A nested list of layers, `[[layer.KEY]]` (empty when absent); errors
    /// inside it name the nested layer (`layer 0.body.1`).
    pub fn stack(&mut self, key: &'static str) -> Result<Vec<LayerSpec>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(j, v)| match v {
                    toml::Value::Table(t) => {
                        let base = self.ctx.rsplit_once(" (").map_or(self.ctx.as_str(), |(b, _)| b);
                        parse_layer(t, format!("{base}.{key}.{j}"))
                    }
                    _ => self.err(format!("'{key}' must be a list of [[layer.{key}]] tables")),
                })
                .collect(),
            Some(v) => self.err(format!("'{key}' must be a list of [[layer.{key}]] tables, got {v}")),
        }
    }
    /// Refuses any key that the declaration did not read.
    pub fn finish(self) -> Result<()> {
        for k in self.table.keys() {
            if k != "type" && k != "inplace" && !self.used.contains(&k.as_str()) {
                return self.err(format!("unknown key '{k}' (known: {})", self.used.join(", ")));
            }
        }
        Ok(())
    }
}

/// The message for a size above [`MAX_DIM`].
pub fn too_large(key: &str, value: i64) -> String {
    format!("'{key}' = {value} is too large (at most {MAX_DIM})")
}

/// A size as a model file writes it: `5`, or `[5, 3]` when the two differ.
pub fn pair_text((a, b): (usize, usize)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("[{a}, {b}]")
    }
}

/// The keys every weighted layer shares, written only when they differ from the defaults.
pub fn write_weight_keys(s: &mut String, bias: bool, l1: Option<f64>, l2: Option<f64>, init: Option<Init>) {
    if !bias {
        s.push_str("bias = false\n");
    }
    if let Some(v) = l1 {
        let _ = writeln!(s, "l1 = {v:?}");
    }
    if let Some(v) = l2 {
        let _ = writeln!(s, "l2 = {v:?}");
    }
    if let Some(i) = init {
        let _ = writeln!(s, "init = \"{}\"", i.name());
    }
}
