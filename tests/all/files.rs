//! What a node leaves on disk is its user's alone: the compiled-code cache
//! (0700 directories, 0600 files, never written or read through a symlink)
//! and the object store's spill directories (0700, spill files 0600), whose
//! leftovers from a node that died are removed by the next one to start.
//! (The store's own tests check the spill files' modes.)
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ferray::Runtime;

use crate::{ferray, fx};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// A component with one export; `n` makes its bytes (and its id) differ.
fn component(n: u32) -> String {
    format!(
        r#"(component
  (core module $m (func (export "f") (result i32) i32.const {n}))
  (core instance $i (instantiate $m))
  (func (export "f") (result u32) (canon lift (core func $i "f"))))"#
    )
}

fn runtime(cache: &Path) -> Runtime {
    Runtime::builder()
        .num_cpus(1.0)
        .cache_dir(Some(cache.to_path_buf()))
        .build_sync()
        .expect("runtime")
}

/// The one `components/<engine hash>` directory under `cache`.
fn entries_dir(cache: &Path) -> PathBuf {
    let mut dirs: Vec<_> = fs::read_dir(cache.join("components"))
        .expect("components dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().expect("one")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_compiled_code_cache_is_0700_with_0600_files() {
    let base = tempfile::tempdir().expect("tempdir");
    let cache = base.path().join("cache");
    let rt = runtime(&cache);
    rt.load_bytes_sync(component(1).as_bytes()).expect("load");
    assert_eq!(rt.stats().host.compiled, 1);
    let entries = entries_dir(&cache);
    for dir in [&cache, &cache.join("components"), &entries] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    let files = files_in(&entries);
    assert_eq!(files.len(), 1, "a temporary file is left: {files:?}");
    assert!(files[0].to_string_lossy().ends_with(".cwasm"), "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
}

#[test]
fn a_cache_dir_others_can_enter_is_closed_again() {
    let base = tempfile::tempdir().expect("tempdir");
    let cache = base.path().join("cache");
    runtime(&cache)
        .load_bytes_sync(component(2).as_bytes())
        .expect("load");
    let entries = entries_dir(&cache);
    fs::set_permissions(&entries, fs::Permissions::from_mode(0o777)).expect("chmod");
    let rt = runtime(&cache);
    rt.load_bytes_sync(component(3).as_bytes()).expect("load");
    assert_eq!(mode(&entries), 0o700);
    assert_eq!(files_in(&entries).len(), 2);
}

#[test]
fn a_cache_entry_that_is_a_symlink_is_neither_read_nor_written_through() {
    let base = tempfile::tempdir().expect("tempdir");
    let cache = base.path().join("cache");
    let wat = component(4);
    runtime(&cache)
        .load_bytes_sync(wat.as_bytes())
        .expect("load");
    let entries = entries_dir(&cache);
    let entry = files_in(&entries).pop().expect("the entry");
    // The good code, elsewhere, and the entry a symlink to it: following the
    // link would read it back without compiling.
    let elsewhere = base.path().join("elsewhere.cwasm");
    fs::rename(&entry, &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, &entry).expect("symlink");
    let before = fs::read(&elsewhere).expect("read");

    let rt = runtime(&cache);
    rt.load_bytes_sync(wat.as_bytes()).expect("load");
    assert_eq!(
        rt.stats().host.disk_cache_hits,
        0,
        "the symlink was followed"
    );
    assert_eq!(rt.stats().host.compiled, 1);
    // The new entry replaced the link; what it pointed to is untouched.
    let meta = fs::symlink_metadata(&entry).expect("entry");
    assert!(meta.file_type().is_file(), "{meta:?}");
    assert_eq!(mode(&entry), 0o600);
    assert_eq!(fs::read(&elsewhere).expect("read"), before);
}

#[cfg(target_os = "linux")]
#[test]
fn a_new_node_removes_the_spill_dirs_of_dead_processes_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    removes_stale_spill_dirs(tmp.path(), |cmd| {
        cmd.env("TMPDIR", tmp.path());
    });
}

/// The same under `--spill-dir`, which is made 0700 if missing.
#[cfg(target_os = "linux")]
#[test]
fn spill_dir_places_a_nodes_spill_dirs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("spill");
    fs::create_dir(&base).expect("mkdir");
    removes_stale_spill_dirs(&base, |cmd| {
        cmd.arg("--spill-dir").arg(&base);
    });
    let fresh = tmp.path().join("made");
    let out = ferray()
        .args(["run", "--spill-dir"])
        .arg(&fresh)
        .args([fx::SQUARES, "heavy-compute", "3"])
        .output()
        .expect("run ferray");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&fresh), 0o700);
}

/// A node started with spill dirs of a dead and of a live process in
/// `base` (`configure` points it there) removes the first only.
#[cfg(target_os = "linux")]
fn removes_stale_spill_dirs(base: &Path, configure: impl FnOnce(&mut std::process::Command)) {
    // Above the kernel's largest pid: no process has it.
    let dead: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse::<u32>()
        .expect("pid_max")
        + 1;
    let me = std::process::id();
    let stale = base.join(format!("ferray-spill-{dead}-0"));
    let live = base.join(format!("ferray-spill-{me}-0"));
    for dir in [&stale, &live] {
        fs::create_dir(dir).expect("mkdir");
        fs::write(dir.join("0123"), b"object").expect("write");
    }
    let mut cmd = ferray();
    cmd.arg("run");
    configure(&mut cmd);
    cmd.args([fx::SQUARES, "heavy-compute", "3"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ferray");
    let node = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        !stale.exists(),
        "the dead process's spill dir is still there"
    );
    assert!(
        live.join("0123").is_file(),
        "a live process's spill dir was touched"
    );
    // Nothing else but the node's own spill dir (0700), if it outlived it.
    for entry in fs::read_dir(base).expect("read") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ferray-spill-") && entry.path() != live {
            assert!(name.starts_with(&format!("ferray-spill-{node}-")), "{name}");
            assert_eq!(mode(&entry.path()), 0o700, "{name}");
        }
    }
}

#[test]
fn a_nodes_spill_dir_is_0700() {
    let rt = Runtime::builder()
        .num_cpus(1.0)
        .cache_dir(None)
        .object_store_memory(1024)
        .build_sync()
        .expect("runtime");
    let dir = rt.object_store().spill_dir().to_path_buf();
    assert_eq!(mode(&dir), 0o700);
}
