//! Tidy: the repository stands alone, and the paths its documents and comments name exist.
//!
//! In the spirit of rust-analyzer's `xtask/src/tidy.rs`: plain `#[test]`s over the source tree,
//! no extra dependencies, deterministic (sorted file list, no network) and fast (a few hundred
//! small files, well under a second).
//!
//! The files checked are those `git ls-files --cached --others --exclude-standard` lists (tracked
//! files plus new, not ignored ones, so a file counts before `git add`), minus any deleted from
//! the working tree, minus files that are not UTF-8 text.
//!
//! # (a) Self-contained
//!
//! No file may point at material a new owner does not receive: the sibling `shared` directory
//! (a parent-relative path into it), or the external reference spec (the word `reference`
//! followed by a slash where it starts a path, or by a space and a section sign). A section sign
//! followed by a digit in a Rust, Markdown, Python or shell file is also refused: it numbers a
//! section of a document that is not in the tree. Cite `docs/` instead (`docs/design.md`,
//! `docs/formats.md`, `docs/model.md`, `docs/images.md`). The repository's own fixture directory
//! `crates/model/tests/data/reference/` is fine: a path that merely ends in `reference/` is not a
//! citation.
//!
//! # (b) Named paths exist
//!
//! Scanned text: every line of a Markdown file, and the comments of Rust (`//`, `///`, `//!`),
//! Python (`#` and triple-quoted strings) and shell (`#`; `*.sh` and the scripts in `.ci/`)
//! files. Trailing comments after code count when the quotes before them are balanced.
//!
//! In that text a token is a repository path when, after stripping surrounding punctuation, a
//! `./` prefix, a `:line` suffix and a `#anchor`:
//! - it starts with a known top-level directory (`crates/`, `server/`, `xtask/`, `docs/`, `images/`,
//!   `profiles/`, `ci/`, `.ci/`, `compose/`, `deploy/`): it must exist relative to the repository
//!   root, as a file or a directory; or
//! - it contains a `/` and its last component ends in a source extension (`.rs`, `.md`, `.py`,
//!   `.sh`, `.toml`, `.json`, `.jsonl`, `.txt`, `.yml`, `.yaml`, `.c`, `.lock`): it must exist
//!   relative to the root, the citing file's directory or one of that directory's parents, or be
//!   the tail of a tracked path (so a code map may say `cpu_guard/baseline.rs`).
//!
//! Tokens that are not paths are left alone: anything with `://` (URLs), tokens starting with `/`,
//! `~`, `$`, `-`, `../` or `target/` (build output, never tracked), tokens with `<`, `>`, `$`, `=`, `@`, `|`, `…` or `...` (placeholders
//! and shell syntax), and words without a `/` (crate names, bare file names) or without a known
//! prefix or extension (`I2_S/TQ2_0`, `pp/tg`). `*` globs and one level of `{a,b}` braces are
//! expanded against the tracked files.
//!
//! Markdown links `[text](target)` are resolved relative to the linking file, as a renderer does.
//! A `#anchor` on a link or on a path to a Markdown file must match one of its headings (GitHub
//! slugs: lower case, punctuation other than `-` and `_` dropped, spaces to `-`, `-1`, `-2`, …
//! for repeats); `[text](#anchor)` is checked against the file's own headings.
//!
//! A line that says `not yet present` may name a path that does not exist (for planned parts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Top-level directories a path token may start with.
const PREFIXES: &[&str] = &[
    "crates/",
    "server/",
    "xtask/",
    "docs/",
    "images/",
    "profiles/",
    "ci/",
    ".ci/",
    "compose/",
    "deploy/",
];

/// Extensions that make a token with a `/` a path even without a known prefix.
const EXTENSIONS: &[&str] = &[
    "rs", "md", "py", "sh", "toml", "json", "jsonl", "txt", "yml", "yaml", "c", "lock",
];

/// This file: it has to spell out the patterns it refuses.
const SELF: &str = "xtask/tests/tidy.rs";

/// Marks a line that names a planned, not yet existing path on purpose.
const PLANNED: &str = "not yet present";

/// The file set the checks run on.
struct Repo {
    /// Text files by repository-relative path (`/`-separated).
    texts: BTreeMap<String, String>,
    /// Every listed file, text or not.
    files: BTreeSet<String>,
    /// Every directory that contains a listed file.
    dirs: BTreeSet<String>,
}

impl Repo {
    fn new(files: BTreeSet<String>, texts: BTreeMap<String, String>) -> Repo {
        let mut dirs = BTreeSet::new();
        for f in &files {
            let mut p = f.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                dirs.insert(parent.to_string());
                p = parent;
            }
        }
        Repo { texts, files, dirs }
    }

    fn load(root: &Path) -> Repo {
        let out = Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(root)
            .output()
            .expect("tidy needs `git` on PATH to list the repository's files");
        assert!(
            out.status.success(),
            "`git ls-files` failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut files = BTreeSet::new();
        let mut texts = BTreeMap::new();
        for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8(name.to_vec()).expect("file names are UTF-8");
            let Ok(bytes) = std::fs::read(root.join(&name)) else {
                continue; // deleted in the working tree
            };
            if let Ok(text) = String::from_utf8(bytes)
                && !text.contains('\0')
            {
                texts.insert(name.clone(), text);
            }
            files.insert(name);
        }
        Repo::new(files, texts)
    }

    fn exists(&self, p: &str) -> bool {
        let p = p.trim_end_matches('/');
        p.is_empty() || self.files.contains(p) || self.dirs.contains(p)
    }

    /// Whether `pattern` (with `*` globs) matches any listed file or directory.
    fn matches(&self, pattern: &str) -> bool {
        let pattern = pattern.trim_end_matches('/');
        if !pattern.contains('*') {
            return self.exists(pattern);
        }
        self.files
            .iter()
            .chain(&self.dirs)
            .any(|f| glob_match(pattern, f))
    }

    /// GitHub heading slugs of a Markdown file.
    fn anchors(&self, md: &str) -> Option<BTreeSet<String>> {
        let text = self.texts.get(md)?;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = BTreeSet::new();
        let mut fence = false;
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with("```") {
                fence = !fence;
                continue;
            }
            if fence || !t.starts_with('#') {
                continue;
            }
            let title = t.trim_start_matches('#');
            if !title.starts_with(' ') {
                continue;
            }
            let slug = slug(title.trim());
            let n = seen.entry(slug.clone()).or_insert(0);
            out.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
            *n += 1;
        }
        Some(out)
    }
}

/// GitHub's heading anchor.
fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `*` matches within one path component.
fn glob_match(pattern: &str, path: &str) -> bool {
    let (pp, fp): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    pp.len() == fp.len() && pp.iter().zip(&fp).all(|(p, f)| component_match(p, f))
}

fn component_match(p: &str, f: &str) -> bool {
    match p.split_once('*') {
        None => p == f,
        Some((head, rest)) => {
            let Some(f) = f.strip_prefix(head) else {
                return false;
            };
            (0..=f.len())
                .filter(|&i| f.is_char_boundary(i))
                .any(|i| component_match(rest, &f[i..]))
        }
    }
}

/// One level of `{a,b}` expansion.
fn expand_braces(p: &str) -> Vec<String> {
    match (p.find('{'), p.find('}')) {
        (Some(i), Some(j)) if i < j => p[i + 1..j]
            .split(',')
            .map(|alt| format!("{}{alt}{}", &p[..i], &p[j + 1..]))
            .collect(),
        _ => vec![p.to_string()],
    }
}

/// `a/b/../c` → `a/c`; `None` if it leaves the repository.
fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

fn parent(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, p: &str) -> Option<String> {
    normalize(&if dir.is_empty() {
        p.to_string()
    } else {
        format!("{dir}/{p}")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Markdown,
    Rust,
    Hash,
    Python,
    Other,
}

fn lang(path: &str) -> Lang {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("md") => Lang::Markdown,
        Some("rs") => Lang::Rust,
        Some("py") => Lang::Python,
        Some("sh") => Lang::Hash,
        // The CI entry scripts are shell without an extension.
        None if path.starts_with(".ci/") => Lang::Hash,
        _ => Lang::Other,
    }
}

/// The text after a trailing comment marker, if the quotes before it are balanced.
fn trailing_comment<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = line[from..].find(marker) {
        let at = from + i;
        if line[..at].matches('"').count().is_multiple_of(2) {
            return Some(&line[at + marker.len()..]);
        }
        from = at + marker.len();
    }
    None
}

/// The scanned text of each line (1-based line numbers): Markdown prose and code, comments.
fn scanned_lines(path: &str, text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_docstring = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let scanned: Option<String> = match lang(path) {
            Lang::Markdown => Some(line.to_string()),
            Lang::Rust => {
                if t.starts_with("//") {
                    Some(t.trim_start_matches(['/', '!']).to_string())
                } else {
                    trailing_comment(line, " // ").map(str::to_string)
                }
            }
            Lang::Hash => {
                if t.starts_with("#!") && i == 0 {
                    None
                } else if let Some(c) = t.strip_prefix('#') {
                    Some(c.to_string())
                } else {
                    trailing_comment(line, " #").map(str::to_string)
                }
            }
            Lang::Python => {
                let quotes = line.matches("\"\"\"").count();
                let was = in_docstring;
                if !quotes.is_multiple_of(2) {
                    in_docstring = !in_docstring;
                }
                if was || quotes > 0 {
                    Some(line.replace("\"\"\"", " "))
                } else if t.starts_with("#!") && i == 0 {
                    None
                } else if let Some(c) = t.strip_prefix('#') {
                    Some(c.to_string())
                } else {
                    trailing_comment(line, " #").map(str::to_string)
                }
            }
            Lang::Other => None,
        };
        if let Some(s) = scanned {
            out.push((i + 1, s));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The target of a Markdown link: relative to the linking file.
    Link,
    /// A word of prose or code.
    Word,
}

/// Link targets and words of one line of scanned text.
fn tokens(text: &str) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let mut rest = String::new();
    let mut s = text;
    // `[text](target)`: take the target, keep the text as words.
    while let Some(i) = s.find("](") {
        let after = &s[i + 2..];
        match after.find(')') {
            Some(j) if !after[..j].contains(char::is_whitespace) => {
                out.push((Kind::Link, after[..j].to_string()));
                rest.push_str(&s[..i + 1]);
                rest.push(' ');
                s = &after[j + 1..];
            }
            _ => {
                rest.push_str(&s[..i + 2]);
                s = after;
            }
        }
    }
    rest.push_str(s);
    for word in rest.split(|c: char| c.is_whitespace() || c == '`') {
        if !word.is_empty() {
            out.push((Kind::Word, word.to_string()));
        }
    }
    out
}

/// Strips what surrounds a path in prose; `None` if the word cannot be a repository path.
fn clean(word: &str) -> Option<(String, Option<String>)> {
    let w = word
        .trim_start_matches(['(', '[', '"', '\'', '*', ','])
        .trim_end_matches(['.', ',', ';', ':', ')', ']', '"', '\'', '!', '?', '*']);
    let w = w.strip_prefix("./").unwrap_or(w);
    if w.is_empty()
        || w.contains("://")
        || w.starts_with(['/', '~', '$', '-', '#'])
        || w.starts_with("../")
        || w.starts_with("target/")
        || w.contains(['<', '>', '$', '=', '@', '|', '…', '\\'])
        || w.contains("...")
        || w.contains("::")
    {
        return None;
    }
    let (w, anchor) = match w.split_once('#') {
        Some((p, a)) => (p, Some(a.to_string())),
        None => (w, None),
    };
    // `file.rs:12` or `file.rs:12:3`
    let w = match w.split_once(':') {
        Some((p, line))
            if line
                .split(':')
                .all(|n| n.chars().all(|c| c.is_ascii_digit())) =>
        {
            p
        }
        Some(_) => return None,
        None => w,
    };
    w.contains('/').then(|| (w.to_string(), anchor))
}

fn has_extension(p: &str) -> bool {
    let last = p.trim_end_matches('/').rsplit('/').next().unwrap_or(p);
    last.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && EXTENSIONS.contains(&ext))
}

/// Problems of check (a) in one file.
fn check_self_contained(path: &str, text: &str) -> Vec<String> {
    if path == SELF {
        return Vec::new();
    }
    let numbered_sections = matches!(
        lang(path),
        Lang::Markdown | Lang::Rust | Lang::Python | Lang::Hash
    );
    let shared = concat!("..", "/shared");
    let fix = "cite the repository's own docs instead (docs/design.md, docs/formats.md, \
               docs/model.md, docs/images.md), in your own words";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let lower = line.to_lowercase();
        if line.contains(shared) {
            out.push(format!(
                "{path}:{n}: points into {shared}, which is not part of the repository; {fix}"
            ));
        }
        let spec_section = lower.contains(concat!("reference ", "§"));
        if spec_section {
            out.push(format!(
                "{path}:{n}: cites a section of the external reference spec; {fix}"
            ));
        }
        for (at, _) in lower.match_indices(concat!("reference", "/")) {
            let before = lower[..at].chars().next_back();
            let starts_path =
                before.is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '/' | '-' | '_' | '.')));
            if starts_path {
                out.push(format!(
                    "{path}:{n}: cites the external reference/ directory; {fix}"
                ));
            }
        }
        if numbered_sections && !spec_section {
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '§' && chars.peek().is_some_and(char::is_ascii_digit) {
                    out.push(format!(
                        "{path}:{n}: numbers a section (§) of a document that is not in the \
                         repository; {fix}"
                    ));
                    break;
                }
            }
        }
    }
    out
}

/// Problems of check (b) in one file.
fn check_paths(repo: &Repo, path: &str, text: &str) -> Vec<String> {
    if path == SELF {
        return Vec::new();
    }
    let dir = parent(path);
    let mut out = Vec::new();
    for (n, line) in scanned_lines(path, text) {
        if line.contains(PLANNED) {
            continue;
        }
        for (kind, raw) in tokens(&line) {
            let problem = match kind {
                Kind::Link => check_link(repo, path, dir, &raw),
                Kind::Word => check_word(repo, path, dir, &raw),
            };
            if let Some(p) = problem {
                out.push(format!("{path}:{n}: {p}"));
            }
        }
    }
    out
}

fn check_link(repo: &Repo, path: &str, dir: &str, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") || target.contains("::") {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((f, a)) => (f, Some(a)),
        None => (target, None),
    };
    if file.is_empty() {
        // Same-file anchor; only meaningful in Markdown.
        return (lang(path) == Lang::Markdown)
            .then(|| check_anchor(repo, path, anchor?, target))
            .flatten();
    }
    if lang(path) != Lang::Markdown {
        // In comments a link target is just another word (rustdoc resolves none of ours).
        return check_word(repo, path, dir, target);
    }
    let Some(resolved) = join(dir, file) else {
        return Some(format!(
            "links to `{target}`, which leaves the repository; link to a file in the tree"
        ));
    };
    if !repo.exists(&resolved) {
        return Some(format!(
            "links to `{target}` (resolved from {dir_shown}: `{resolved}`), which does not exist; \
             fix the link, or write the document it points to",
            dir_shown = if dir.is_empty() { "the root" } else { dir }
        ));
    }
    anchor.and_then(|a| check_anchor(repo, &resolved, a, target))
}

fn check_word(repo: &Repo, _path: &str, dir: &str, raw: &str) -> Option<String> {
    let (p, anchor) = clean(raw)?;
    let prefixed = PREFIXES
        .iter()
        .any(|pre| p.starts_with(pre) || p == pre[..pre.len() - 1]);
    if !prefixed && !has_extension(&p) {
        return None;
    }
    let alternatives = expand_braces(&p);
    let found = alternatives.iter().all(|alt| {
        if prefixed {
            return repo.matches(alt);
        }
        let mut d = dir;
        loop {
            if join(d, alt).is_some_and(|j| repo.matches(&j)) {
                return true;
            }
            if d.is_empty() {
                break;
            }
            d = parent(d);
        }
        let tail = format!("/{}", alt.trim_end_matches('/'));
        repo.files
            .iter()
            .chain(&repo.dirs)
            .any(|f| f.ends_with(&tail))
    });
    if !found {
        let how = if prefixed {
            "relative to the repository root"
        } else {
            "relative to the root, this file's directory or its parents, or as the tail of a \
             tracked path"
        };
        return Some(format!(
            "names `{p}`, which does not exist ({how}); fix the path, or say \"{PLANNED}\" on \
             this line if it is planned"
        ));
    }
    let a = anchor?;
    let target = join("", &p)?;
    if a.is_empty() || !target.ends_with(".md") {
        return None;
    }
    check_anchor(repo, &target, &a, &format!("{p}#{a}"))
}

fn check_anchor(repo: &Repo, md: &str, anchor: &str, cited: &str) -> Option<String> {
    let anchors = repo.anchors(md)?;
    if anchors.contains(anchor) {
        return None;
    }
    let choices = if anchors.is_empty() {
        format!("{md} has no headings")
    } else {
        let list: Vec<String> = anchors.iter().map(|a| format!("#{a}")).collect();
        format!("use one of: {}", list.join(", "))
    };
    Some(format!(
        "cites `{cited}`, but {md} has no heading with anchor `#{anchor}`; {choices}"
    ))
}

fn check(repo: &Repo) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in &repo.texts {
        out.extend(check_self_contained(path, text));
        out.extend(check_paths(repo, path, text));
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

#[test]
fn repository_stands_alone_and_named_paths_exist() {
    let repo = Repo::load(&workspace_root());
    assert!(
        repo.texts.contains_key("README.md") && repo.texts.contains_key(SELF),
        "tidy did not find the repository's files (README.md, {SELF}) through `git ls-files`"
    );
    let problems = check(&repo);
    assert!(
        problems.is_empty(),
        "tidy found {} problem(s):\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

/// A small in-memory repository for the detector's own tests.
fn fake(files: &[(&str, &str)]) -> Repo {
    Repo::new(
        files.iter().map(|(p, _)| p.to_string()).collect(),
        files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
    )
}

const DOC: &str =
    "# Title\n\n## I2_S\n\n### I2_S size\n\n```text\n# not a heading\n```\n## Code 3\n";

#[test]
fn detector_flags_missing_paths_and_anchors() {
    let repo = fake(&[
        ("docs/formats.md", DOC),
        ("server/src/quant/ternary.rs", ""),
        (
            "server/src/a.rs",
            "//! See `server/src/nope.rs` and docs/formats.md#nope.\n\
             fn f() {} // and `quant/gone.rs`\n\
             // [x](docs/missing.md) and `profiles/*.yaml`\n",
        ),
        (
            "README.md",
            "[d](docs/formats.md#i2_s-sizes) [e](#nowhere) `server/tests/{a,b}.rs`\n",
        ),
    ]);
    let problems = check(&repo);
    let expect = [
        "server/src/a.rs:1: names `server/src/nope.rs`",
        "server/src/a.rs:1: cites `docs/formats.md#nope`",
        "server/src/a.rs:2: names `quant/gone.rs`",
        "server/src/a.rs:3: names `profiles/*.yaml`",
        "README.md:1: cites `docs/formats.md#i2_s-sizes`",
        "README.md:1: cites `#nowhere`",
        "README.md:1: names `server/tests/{a,b}.rs`",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "expected a problem starting with {e:?}, got:\n{}",
            problems.join("\n")
        );
    }
    // In a comment a link target is checked like any other word.
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("server/src/a.rs:3: names `docs/missing.md`"))
    );
    assert_eq!(problems.len(), expect.len() + 1, "{}", problems.join("\n"));
}

#[test]
fn detector_accepts_existing_paths_and_ignores_non_paths() {
    let repo = fake(&[
        ("docs/formats.md", DOC),
        ("profiles/x.toml", ""),
        ("server/src/quant/ternary.rs", ""),
        ("server/tests/a.rs", ""),
        ("server/tests/b.rs", ""),
        (
            "server/src/lib.rs",
            "//! `server/src/quant/ternary.rs:12` docs/formats.md#i2_s-size, `quant/ternary.rs`\n\
             //! I2_S/TQ2_0 pp/tg https://example.com/x.md `crate::quant` `<out>/oci` `$PWD/m.md`\n\
             //! `/v1/chat/completions` ../x/y.rs `types.rs` (`profiles/*.toml`) `server/`\n\
             let s = \"// docs/nope.md\"; // `server/tests/{a,b}.rs` and docs/formats.md#code-3\n",
        ),
        (
            "docs/index.md",
            "[f](formats.md#i2_s) [g](#index) [h](https://x.invalid/a.md) `compose/` \
             (not yet present)\n\n# Index\n```sh\ncargo run -- --out tiny.gguf\n```\n",
        ),
        (
            "xtask/py/x.py",
            "#!/usr/bin/env python3\n\"\"\"Reads docs/formats.md.\n\nAlso server/tests/a.rs\"\"\"\nx = 1  # `server/src/lib.rs`\n",
        ),
    ]);
    let problems = check(&repo);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn self_containment_rule() {
    let shared = concat!("..", "/shared/DESIGN.md");
    let spec = concat!("reference", "/bitnet-model-and-gguf.md");
    let sec = concat!("reference ", "§2.2");
    let bad = format!("// see {shared}\n// `{spec}`\n// {sec}\n// §4.3\n");
    let problems = check_self_contained("server/src/x.rs", &bad);
    assert_eq!(problems.len(), 4, "{}", problems.join("\n")); // one per line
    let fine = concat!(
        "// server/tests/data/reference/README.md, `tests/data/reference/`\n",
        "// \"bitnet-serve/hf-reference/v1\", docs/model.md#activation-quantization\n"
    );
    assert!(check_self_contained("server/src/x.rs", fine).is_empty());
    assert!(check_self_contained("corpus.jsonl", "{\"text\": \"§977752\"}").is_empty());
}
