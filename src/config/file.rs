//! The config file as written: raw serde structs, one per YAML mapping.
//!
//! Exists to keep the file's shape (names, optional keys, types as YAML sees
//! them) apart from the validated [`Config`](super::Config). Every struct
//! denies unknown fields, so a misspelled key is an error with its line rather
//! than a silently ignored setting. Values that need more than YAML's types
//! (durations, sizes, addresses, URLs) stay text here and are read by the
//! validator, which knows the field path for its messages.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with listeners, routes and backends"
)]
pub(crate) struct RawConfig {
    pub(crate) listeners: Vec<RawListener>,
    pub(crate) routes: Vec<RawRoute>,
    pub(crate) backends: NamedMap<RawBackend>,
    #[serde(default)]
    pub(crate) limits: Option<RawLimits>,
    #[serde(default)]
    pub(crate) timeouts: Option<RawTimeouts>,
}

/// One entry of `listeners`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener: a mapping with bind and optionally tls"
)]
pub(crate) struct RawListener {
    pub(crate) bind: Scalar,
    #[serde(default)]
    pub(crate) tls: Option<RawTls>,
}

/// `listeners[i].tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with cert and key")]
pub(crate) struct RawTls {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// One entry of `routes`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route: a mapping with path_prefix, backend and optional settings"
)]
pub(crate) struct RawRoute {
    pub(crate) path_prefix: String,
    pub(crate) backend: String,
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<RawMode>,
    #[serde(default)]
    pub(crate) max_frame_size: Option<Scalar>,
    #[serde(default)]
    pub(crate) max_message_size: Option<Scalar>,
    #[serde(default)]
    pub(crate) strip_prefix: Option<bool>,
}

/// `routes[i].mode`; serde reports a misspelling with the allowed names.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawMode {
    Frames,
    Tunnel,
}

/// One value of the `backends` mapping.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a backend: a mapping with servers and optional settings"
)]
pub(crate) struct RawBackend {
    pub(crate) servers: Vec<RawServer>,
    #[serde(default)]
    pub(crate) connect_timeout: Option<Scalar>,
    #[serde(default)]
    pub(crate) handshake_timeout: Option<Scalar>,
    #[serde(default)]
    pub(crate) retries: Option<Count>,
    #[serde(default)]
    pub(crate) source_addresses: Option<Vec<Scalar>>,
    #[serde(default)]
    pub(crate) dns_refresh: Option<Scalar>,
}

/// One entry of `backends.NAME.servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a server: a mapping with url")]
pub(crate) struct RawServer {
    pub(crate) url: String,
}

/// The `limits` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of limits")]
pub(crate) struct RawLimits {
    #[serde(default)]
    pub(crate) max_connections: Option<Count>,
}

/// The `timeouts` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of timeouts")]
pub(crate) struct RawTimeouts {
    #[serde(default)]
    pub(crate) client_handshake: Option<Scalar>,
    #[serde(default)]
    pub(crate) close: Option<Scalar>,
}

/// Any YAML scalar, kept as text: `30s`, `16MiB`, `4096`, `127.0.0.1:80`.
///
/// Lets the validator give one precise message for `30` (no unit) whether
/// it was written as a number or a string; a mapping or sequence in its place
/// is a type error reported by serde with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A non-negative whole number (`retries`, `max_connections`).
///
/// Exists for the message: `-1` is refused as "expected a whole number, 0 or
/// more" rather than with a Rust type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count(pub(crate) u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number, 0 or more")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }

        deserializer.deserialize_u64(CountVisitor)
    }
}

/// A YAML mapping read in file order, with its keys as names.
///
/// Exists for `backends`: the order of backends is part of the validated
/// config (routes refer to them by index), and a name written twice is an
/// error rather than a silent override.
#[derive(Debug)]
pub(crate) struct NamedMap<T>(pub(crate) Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamedMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = NamedMap<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from names to settings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NamedMap<T>, A::Error> {
                let mut entries: Vec<(String, T)> = Vec::new();
                let mut seen = HashSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !seen.insert(name.clone()) {
                        return Err(de::Error::custom(format_args!(
                            "name {name:?} is defined twice"
                        )));
                    }
                    let value = map.next_value::<T>()?;
                    entries.push((name, value));
                }
                Ok(NamedMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}
