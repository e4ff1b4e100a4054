use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

macro_rules! digest_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name([u8; 32]);

        impl $name {
            /// The id of these bytes: their blake3 hash.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
            /// An id from a digest computed elsewhere.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 12 hex characters, for logs.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }
            /// Whether `bytes` hash to this id.
            pub fn matches(&self, bytes: &[u8]) -> bool {
                blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "`{s}` is not a {}: expected 64 hex characters",
                        $what
                    ))
                })?;
                Ok(Self(out))
            }
        }
    };
}

digest_id!(
    /// The id of an object: the blake3 hash of its bytes.
    ObjectId,
    "object id"
);
digest_id!(
    /// The id of a component: the blake3 hash of its bytes.
    ComponentId,
    "component digest"
);

macro_rules! counter_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "-{}"), self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

counter_id!(
    /// A task, numbered in submission order within a runtime.
    TaskId,
    "task"
);
counter_id!(
    /// An actor, numbered in creation order within a runtime.
    ActorId,
    "actor"
);

counter_id!(
    /// A node of a cluster, numbered by the head as nodes join; a node that
    /// comes back after it was declared dead joins with a new id.
    NodeId,
    "node"
);
counter_id!(
    /// A job of a cluster: a submitted driver, or a connected client.
    JobId,
    "job"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_is_blake3_and_round_trips_as_hex() {
        let id = ObjectId::of(b"hello");
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(id.to_hex().parse::<ObjectId>().unwrap(), id);
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellp"));
        assert!("xyz".parse::<ObjectId>().is_err());
    }
}
