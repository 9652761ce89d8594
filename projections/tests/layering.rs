//! The read side's place in the dependency graph: projections -> eventlog -> domain. It
//! follows and verifies the log but never writes it, so the write side (`commands`) may
//! appear among its dev-dependencies (tests that write through the ledger), never among
//! the crates it is built with.

/// The workspace crates a section of this crate's manifest names.
fn workspace_crates_in(section: &str) -> Vec<String> {
    let manifest = include_str!("../Cargo.toml");
    let mut in_section = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == section;
            continue;
        }
        let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
        if in_section && ["domain", "eventlog", "commands", "projections", "tollbook"].contains(&name) {
            found.push(name.to_string());
        }
    }
    found
}

#[test]
fn projections_is_built_on_eventlog_and_domain_not_on_the_write_side() {
    assert_eq!(workspace_crates_in("[dependencies]"), ["domain", "eventlog"]);
    // The check reads the manifest it claims to read.
    assert!(workspace_crates_in("[dev-dependencies]").contains(&"commands".to_string()));
}
