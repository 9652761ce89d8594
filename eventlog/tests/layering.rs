//! The event log's place in the dependency graph: it knows `domain` (the events it stores)
//! and nothing of the write side or the read side that use it.

#[test]
fn eventlog_is_built_on_domain_alone() {
    let manifest = include_str!("../Cargo.toml");
    let mut in_section = false;
    let mut workspace_crates = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[dependencies]";
            continue;
        }
        let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
        if in_section && ["domain", "eventlog", "commands", "projections", "tollbook"].contains(&name) {
            workspace_crates.push(name);
        }
    }
    assert_eq!(workspace_crates, ["domain"]);
}
