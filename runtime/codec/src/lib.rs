//! ferray's values and signatures, without wasmtime.
//!
//! - [`codec`]: the canonical binary encoding of WIT values, generic over the
//!   value type ([`codec::Value`]): wasmtime's on a node, WAVE's on a client.
//! - [`FuncInfo`], [`ComponentInfo`]: a component's export signatures read
//!   from its bytes with `wasmparser`'s validator. A connected client checks calls and
//!   converts WAVE arguments and results with them, and never compiles the
//!   component; the embedded runtime shows the same.
//! - [`Exports`]: how exports group into functions and actor classes, for
//!   the host and for [`ComponentInfo`] alike.

pub mod codec;
mod exports;
mod info;

pub use exports::{Class, Export, Exports, Role, interface_short};
pub use info::{ClassInfo, ComponentInfo, FuncInfo, Inspection, WitType, check_header};
