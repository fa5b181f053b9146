//! Deserialisers for the two keyed tables whose keys are open-ended in Spin:
//! trigger types (`[[trigger.<type>]]`, `[application.trigger.<type>]`) and
//! tools (`[... .tool.<name>]`).
//!
//! They are written by hand rather than with `#[serde(flatten)]` because
//! flattening buffers values and loses `toml`'s spans, and because we want
//! unknown trigger types reported with their own message and position (the
//! validator does that from `unknown`), and unknown tools silently ignored.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use toml::Spanned;

/// The trigger types Trellis implements, for messages.
pub(crate) const TRIGGER_TYPES: &str = "http, amqp";

/// A table keyed by trigger type: `http` and `amqp` are parsed as `H` and `A`;
/// any other key is remembered (with its position) so it can be reported.
#[derive(Debug)]
pub(crate) struct TriggerTable<H, A> {
    pub http: Option<H>,
    pub amqp: Option<A>,
    pub unknown: Vec<Spanned<String>>,
}

impl<H, A> Default for TriggerTable<H, A> {
    fn default() -> Self {
        Self {
            http: None,
            amqp: None,
            unknown: Vec::new(),
        }
    }
}

impl<'de, H: Deserialize<'de>, A: Deserialize<'de>> Deserialize<'de> for TriggerTable<H, A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<H, A>(PhantomData<(H, A)>);

        impl<'de, H: Deserialize<'de>, A: Deserialize<'de>> Visitor<'de> for TableVisitor<H, A> {
            type Value = TriggerTable<H, A>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a table of trigger types ({TRIGGER_TYPES})")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut table = TriggerTable::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.get_ref().as_str() {
                        "http" => table.http = Some(map.next_value()?),
                        "amqp" => table.amqp = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            table.unknown.push(key);
                        }
                    }
                }
                Ok(table)
            }
        }

        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

/// A `tool` table: `trellis` is parsed as `T`; other tools' tables are
/// ignored, as Spin ignores all of them.
#[derive(Debug)]
pub(crate) struct ToolTable<T> {
    pub trellis: Option<T>,
}

impl<T> Default for ToolTable<T> {
    fn default() -> Self {
        Self { trellis: None }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ToolTable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ToolVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ToolVisitor<T> {
            type Value = ToolTable<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of tool settings")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut table = ToolTable::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "trellis" {
                        table.trellis = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(table)
            }
        }

        deserializer.deserialize_map(ToolVisitor(PhantomData))
    }
}
