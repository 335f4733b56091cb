//! The README's demo (`scripts/demo.sh`): `lakebackup-dev demo` runs the whole story, checks its
//! own restore, and leaves nothing running.

use std::process::Command;

#[test]
fn demo_runs_end_to_end_and_verifies_its_restore() {
    let output = Command::new(env!("CARGO_BIN_EXE_lakebackup-dev"))
        .arg("demo")
        .current_dir(lakebackup_devtools::azurite::project_root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("lakebackup-dev demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("restore --as-of (backup)"), "{stdout}");
    assert!(
        stdout.contains("2 restored, 3 unchanged, 1 newer kept"),
        "{stdout}"
    );
    assert!(stdout.contains("byte-identical"), "{stdout}");
    assert!(stderr.contains("[9/9]"), "progress is shown: {stderr}");
    // The doctor ran on the demo lake: Azurite's defaults are warnings, nothing failed.
    assert!(
        stdout.contains("Doctor: warn in ") && stdout.contains("none failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SOURCE_STORAGE: blob soft delete"),
        "{stdout}"
    );
}
