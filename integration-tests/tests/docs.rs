//! The docs' links hold: every relative link in every Markdown file of the
//! repository names a file that exists, and every `#anchor` names a heading (or
//! an explicit anchor) of its target, as GitHub renders them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

/// The repository's Markdown files: tracked ones, not build output or installed tools.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    const SKIP: [&str; 6] = ["target", "node_modules", ".git", ".tools", "output", "results"];
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a Markdown text offers: its headings' slugs (a repeated one gets
/// `-1`, `-2`, …, as GitHub numbers them) and explicit `id="…"` / `name="…"`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let heading = line.strip_prefix('#').map(|rest| rest.trim_start_matches('#'));
        if let Some(heading) = heading.filter(|h| h.starts_with(' ')) {
            let base = slug(heading);
            let count = seen.entry(base.clone()).or_insert(0);
            anchors.insert(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
            *count += 1;
        }
        for attribute in ["id=\"", "name=\""] {
            for (at, _) in line.match_indices(attribute) {
                let rest = &line[at + attribute.len()..];
                if let Some(end) = rest.find('"') {
                    anchors.insert(rest[..end].to_owned());
                }
            }
        }
    }
    anchors
}

/// Every `[text](target)` and `![alt](target)` outside code, with its line number.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_code = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code spans may show link syntax as text.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (at, _) in prose.match_indices("](") {
            let rest = &prose[at + 2..];
            if let Some(end) = rest.find(')') {
                let target = rest[..end].split_whitespace().next().unwrap_or("").to_owned();
                found.push((number + 1, target));
            }
        }
    }
    found
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = repository();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.iter().any(|f| f.ends_with("README.md")), "found the README");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in links(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').map_or((target.as_str(), None), |(p, a)| (p, Some(a)));
            let resolved = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            let shown = format!("{}:{line}: {target}", file.strip_prefix(&root).unwrap().display());
            if !resolved.exists() {
                broken.push(format!("{shown} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor.filter(|a| !a.is_empty()) {
                let is_markdown = resolved.extension().is_some_and(|e| e == "md");
                if is_markdown && !anchors(&std::fs::read_to_string(&resolved).unwrap()).contains(anchor) {
                    broken.push(format!("{shown} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{} of {checked} links are broken:\n{}", broken.len(), broken.join("\n"));
    assert!(checked > 20, "only {checked} links checked: is the link reader right?");
}

#[test]
fn anchors_are_named_as_github_names_them() {
    let text = "# Wire protocol\n## `sendmessage` (w)\n## Rights, moderation and rate limits\n```\n# not a heading\n```\n## Rooms\n## Rooms\n<a id=\"custom\"></a>";
    let found = anchors(text);
    for anchor in ["wire-protocol", "sendmessage-w", "rights-moderation-and-rate-limits", "rooms", "rooms-1", "custom"]
    {
        assert!(found.contains(anchor), "{anchor} in {found:?}");
    }
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        links("see [a](b.md#c) and `[x](y)` and ![p](q.png)"),
        [(1, "b.md#c".to_owned()), (1, "q.png".to_owned())]
    );
}

#[test]
fn every_test_file_is_listed_with_what_it_proves() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(here.join("README.md")).unwrap();
    let mut unlisted = Vec::new();
    for (dir, suffix) in [("tests", ".rs"), ("browser", ".test.cjs")] {
        for entry in std::fs::read_dir(here.join(dir)).unwrap().map(Result::unwrap) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(suffix) && name != "main.rs" && !readme.contains(&format!("| `{dir}/{name}` |")) {
                unlisted.push(format!("{dir}/{name}"));
            }
        }
    }
    assert!(unlisted.is_empty(), "integration-tests/README.md's table lacks {unlisted:?}");
}

#[test]
fn every_test_file_runs_as_a_module_of_the_one_test_binary() {
    // autotests = false: a file tests/main.rs does not name would never run.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(tests.join("main.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&tests).unwrap().map(Result::unwrap) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") else { continue };
        if !main.lines().any(|line| line == format!("mod {module};")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "tests/main.rs does not name {missing:?} (add `mod NAME;`)");
}
