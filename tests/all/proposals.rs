//! The WebAssembly proposals the guests do not use are off in the host's
//! engine (`ferray_host::Host::new`): a component that uses one is refused
//! when it is loaded, with an error that names what it uses, and nothing of
//! it runs. Each test loads a small component, given as WebAssembly text,
//! that uses one such proposal and nothing else.

use std::sync::OnceLock;

use ferray::{Error, Runtime};

/// One embedded runtime for these tests, without a code cache: each
/// component here is refused when compiled.
fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::builder()
            .num_cpus(1.0)
            .cache_dir(None)
            .build_sync()
            .expect("runtime")
    })
}

/// A component whose one core module is `module` (its fields, WAT).
fn component(module: &str) -> String {
    format!("(component (core module {module}))")
}

/// Loading `wat` fails, and the error says `what` (case-insensitive).
#[track_caller]
fn refused(wat: &str, what: &str) {
    let err = match rt().load_bytes_sync(wat.as_bytes()) {
        Ok(_) => panic!("a component using {what} was loaded:\n{wat}"),
        Err(e) => e,
    };
    assert!(
        matches!(err, Error::InvalidArgument(_)),
        "not refused as invalid: {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.to_lowercase().contains(&what.to_lowercase()),
        "the error does not say {what:?}: {msg}"
    );
}

/// The control: the same kind of component, using none of them, loads.
#[test]
fn a_component_using_no_disabled_proposal_loads() {
    let wat = component(
        r#"(memory 1) (func (export "f") (param i32 i32) (result i32)
             local.get 0 local.get 1 i32.add)"#,
    );
    rt().load_bytes_sync(wat.as_bytes()).expect("load");
}

#[test]
fn gc_types_are_refused() {
    refused(&component("(type (struct (field i32)))"), "gc");
}

#[test]
fn typed_function_references_are_refused() {
    refused(
        &component("(type $f (func)) (func (drop (ref.null $f)))"),
        "function references",
    );
}

#[test]
fn exceptions_are_refused() {
    refused(&component("(tag $e) (func (throw $e))"), "exceptions");
}

#[test]
fn exception_handlers_are_refused() {
    refused(
        &component("(tag $e) (func (block $h (try_table (catch_all $h)) ))"),
        "exceptions",
    );
}

#[test]
fn legacy_exception_handlers_are_refused() {
    refused(&component("(func try nop catch_all nop end)"), "exceptions");
}

#[test]
fn shared_memory_is_refused() {
    refused(&component("(memory 1 1 shared)"), "threads");
}

#[test]
fn atomics_are_refused() {
    refused(
        &component("(memory 1) (func (drop (i32.atomic.load (i32.const 0))))"),
        "threads",
    );
}

#[test]
fn memory64_is_refused() {
    refused(&component("(memory i64 1)"), "memory64");
}

#[test]
fn multiple_memories_are_refused() {
    refused(&component("(memory 1) (memory 1)"), "multiple memories");
}

#[test]
fn stack_switching_is_refused() {
    refused(
        &component("(type $f (func)) (type $c (cont $f))"),
        "stack switching",
    );
}

#[test]
fn tail_calls_are_refused() {
    refused(&component("(func $f (return_call $f))"), "tail calls");
}

#[test]
fn wide_arithmetic_is_refused() {
    refused(
        &component(
            "(func (param i64 i64 i64 i64) (result i64 i64)
               local.get 0 local.get 1 local.get 2 local.get 3 i64.add128)",
        ),
        "wide arithmetic",
    );
}

#[test]
fn custom_page_sizes_are_refused() {
    refused(&component("(memory 1 (pagesize 1))"), "custom page sizes");
}

#[test]
fn relaxed_simd_is_refused() {
    refused(
        &component(
            "(func (param v128 v128) (result v128)
               local.get 0 local.get 1 i8x16.relaxed_swizzle)",
        ),
        "relaxed simd",
    );
}

#[test]
fn component_model_async_types_are_refused() {
    refused("(component (type (future u32)))", "async");
}

#[test]
fn component_model_async_builtins_are_refused() {
    refused("(component (core func (canon backpressure.inc)))", "async");
}

#[test]
fn component_model_error_contexts_are_refused() {
    refused("(component (type (list error-context)))", "error-context");
}

#[test]
fn component_model_maps_are_refused() {
    refused("(component (type (map string u32)))", "map");
}

#[test]
fn component_model_fixed_length_lists_are_refused() {
    refused("(component (type (list u8 4)))", "fixed-length");
}
