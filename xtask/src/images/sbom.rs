//! SPDX 2.3 JSON software bill of materials for one tier image: the image, the server binary (with
//! its SHA-256/SHA-1), every crate compiled into it (licence, version, Cargo.lock checksum, purl,
//! dependency edges), the Rust standard library and musl it is linked with, and the Debian
//! packages host files came from. Deterministic: same inputs, same bytes (document namespace is
//! derived from the content). It does NOT scan binaries; the graph comes from cargo.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::cargo_meta::Graph;
use super::spec::Provenance;

/// Everything the SBOM describes.
pub struct SbomInput<'a> {
    /// Image name (e.g. `bitnet-server`).
    pub image_name: &'a str,
    /// Image version.
    pub version: &'a str,
    /// Tier tag suffix.
    pub suffix: &'a str,
    /// RFC 3339 creation time.
    pub created: &'a str,
    /// Source repository URL.
    pub source_url: &'a str,
    /// Git revision.
    pub revision: &'a str,
    /// Path of the binary in the image (absolute).
    pub binary_path: &'a str,
    /// The binary's bytes.
    pub binary: &'a [u8],
    /// The crate graph.
    pub graph: &'a Graph,
    /// Package ids in the binary.
    pub packages: &'a BTreeSet<String>,
    /// (name, version) → sha256 of the .crate.
    pub checksums: &'a BTreeMap<(String, String), String>,
    /// Debian packages host files came from.
    pub debian: &'a [Provenance],
    /// `rustc -V` (e.g. `rustc 1.95.0 (… 2026-04-14)`).
    pub rustc_version: &'a str,
    /// Tool name and version for `creationInfo.creators`.
    pub tool: &'a str,
}

fn spdx_id(kind: &str, name: &str, version: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("SPDXRef-{kind}-{}-{}", clean(name), clean(version))
}

/// Cargo's old `MIT/Apache-2.0` syntax to an SPDX expression.
pub fn spdx_license(cargo: Option<&str>) -> String {
    match cargo {
        Some(l) if !l.trim().is_empty() => {
            l.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
        }
        _ => "NOASSERTION".to_string(),
    }
}

/// Build the SPDX document (as a JSON value; write it with `oci::canonical_json`).
pub fn spdx(input: &SbomInput<'_>) -> Value {
    let g = input.graph;
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let rel = |a: &str, kind: &str, b: &str| json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b});

    packages.push(json!({
        "SPDXID": image_id,
        "name": input.image_name,
        "versionInfo": format!("{}-{}", input.version, input.suffix),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    }));
    relationships.push(rel("SPDXRef-DOCUMENT", "DESCRIBES", &image_id));

    let ids: BTreeMap<&str, String> = input
        .packages
        .iter()
        .filter_map(|id| g.packages.get(id))
        .map(|p| (p.id.as_str(), spdx_id("Crate", &p.name, &p.version)))
        .collect();
    for id in input.packages {
        let Some(p) = g.packages.get(id) else {
            continue;
        };
        let sid = &ids[id.as_str()];
        let mut pkg = json!({
            "SPDXID": sid,
            "name": p.name,
            "versionInfo": p.version,
            "filesAnalyzed": false,
            "licenseDeclared": spdx_license(p.license.as_deref()),
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:cargo/{}@{}", p.name, p.version),
            }],
        });
        let is_crates_io = p.source.as_deref().is_some_and(|s| {
            s.contains("github.com/rust-lang/crates.io-index") || s.contains("index.crates.io")
        });
        pkg["downloadLocation"] = if is_crates_io {
            json!(format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                p.name, p.version
            ))
        } else if p.source.is_none() && !input.source_url.is_empty() {
            // A workspace package: this repository at this revision.
            json!(format!(
                "git+{}@{}",
                input.source_url,
                input.revision.trim_end_matches("-dirty")
            ))
        } else {
            json!(p.source.clone().unwrap_or_else(|| "NOASSERTION".into()))
        };
        if let Some(sum) = input.checksums.get(&(p.name.clone(), p.version.clone())) {
            pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
        }
        if let Some(d) = &p.description {
            pkg["summary"] = json!(d);
        }
        if let Some(r) = &p.repository {
            pkg["homepage"] = json!(r);
        }
        if *id == g.root {
            pkg["primaryPackagePurpose"] = json!("APPLICATION");
        } else {
            pkg["primaryPackagePurpose"] = json!("LIBRARY");
        }
        packages.push(pkg);
        for dep in g.deps.get(id).into_iter().flatten() {
            if let Some(dep_sid) = ids.get(dep.as_str()) {
                relationships.push(rel(sid, "DEPENDS_ON", dep_sid));
            }
        }
    }

    // What every binary is statically linked with, from the toolchain.
    let rust_version = input
        .rustc_version
        .split_whitespace()
        .nth(1)
        .unwrap_or("NOASSERTION");
    let std_id = spdx_id("Toolchain", "rust-std", rust_version);
    packages.push(json!({
        "SPDXID": std_id, "name": "rust-std", "versionInfo": rust_version,
        "downloadLocation": "https://static.rust-lang.org", "filesAnalyzed": false,
        "licenseDeclared": "MIT OR Apache-2.0", "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
        "comment": format!("Rust standard library, statically linked ({})", input.rustc_version),
    }));
    let musl_id = spdx_id("Toolchain", "musl", "rust-self-contained");
    packages.push(json!({
        "SPDXID": musl_id, "name": "musl", "versionInfo": "NOASSERTION",
        "downloadLocation": "https://musl.libc.org/releases/", "filesAnalyzed": false,
        "licenseDeclared": "MIT", "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION", "primaryPackagePurpose": "LIBRARY",
        "comment": format!("C library, statically linked: the self-contained musl shipped with {}", input.rustc_version),
    }));

    // The binary as a file.
    let file_id = "SPDXRef-File-server-binary";
    let file = json!({
        "SPDXID": file_id,
        "fileName": format!(".{}", input.binary_path),
        "checksums": [
            {"algorithm": "SHA1", "checksumValue": hex::encode(Sha1::digest(input.binary))},
            {"algorithm": "SHA256", "checksumValue": hex::encode(Sha256::digest(input.binary))},
        ],
        "fileTypes": ["BINARY"],
        "licenseConcluded": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    });
    relationships.push(rel(&image_id, "CONTAINS", file_id));
    if let Some(root_sid) = ids.get(g.root.as_str()) {
        relationships.push(rel(file_id, "GENERATED_FROM", root_sid));
        relationships.push(rel(root_sid, "STATIC_LINK", &std_id));
        relationships.push(rel(root_sid, "STATIC_LINK", &musl_id));
    }

    // Debian packages of host files (CA bundle, copyright files), once each.
    let mut seen = BTreeSet::new();
    for d in input.debian {
        let version = d.version.clone().unwrap_or_else(|| "NOASSERTION".into());
        if !seen.insert((d.package.clone(), version.clone())) {
            continue;
        }
        let sid = spdx_id("Deb", &d.package, &version);
        let mut pkg = json!({
            "SPDXID": sid, "name": d.package, "versionInfo": version,
            "downloadLocation": "NOASSERTION", "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION", "copyrightText": "NOASSERTION",
            "supplier": "Organization: Debian",
            "comment": format!("Files copied from the build machine ({}) where this Debian package was installed", d.host_path),
        });
        if let Some(v) = &d.version {
            pkg["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{}@{}", d.package, v),
            }]);
        }
        packages.push(pkg);
        relationships.push(rel(&image_id, "CONTAINS", &sid));
    }

    // Namespace: unique per content, stable across rebuilds of the same content.
    let body = json!({"packages": packages, "files": [file], "relationships": relationships});
    let content_hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
    let base = if input.source_url.is_empty() {
        "https://spdx.org/spdxdocs"
    } else {
        input.source_url
    };
    let name = format!("{}-{}-{}", input.image_name, input.version, input.suffix);
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("{}/spdx/{}-{}", base.trim_end_matches('/'), name, &content_hash[..32]),
        "creationInfo": {
            "created": input.created,
            "creators": [format!("Tool: {}", input.tool)],
        },
        "packages": body["packages"],
        "files": body["files"],
        "relationships": body["relationships"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::cargo_meta;

    const META: &str = r#"{
      "packages": [
        {"id": "path+file:///w/server#app@0.1.0", "name": "app", "version": "0.1.0",
         "license": "MIT", "license_file": null, "source": null,
         "manifest_path": "/w/server/Cargo.toml", "repository": null, "description": "d",
         "links": null, "dependencies": []},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#a@1.0.0", "name": "a",
         "version": "1.0.0", "license": "MIT/Apache-2.0", "license_file": null,
         "source": "registry+https://github.com/rust-lang/crates.io-index",
         "manifest_path": "/c/a/Cargo.toml", "repository": "https://x/a", "description": null,
         "links": null, "dependencies": []}
      ],
      "resolve": {"nodes": [
        {"id": "path+file:///w/server#app@0.1.0", "deps": [
          {"pkg": "registry+https://github.com/rust-lang/crates.io-index#a@1.0.0", "dep_kinds": [{"kind": null}]}]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#a@1.0.0", "deps": []}
      ]}
    }"#;

    #[test]
    fn document_is_spdx_2_3_with_packages_edges_and_binary_checksums() {
        let g = cargo_meta::parse(META.as_bytes(), "app").unwrap();
        let pk = g.runtime_closure(None);
        let sums = [(("a".to_string(), "1.0.0".to_string()), "ab".repeat(32))].into();
        let deb = [Provenance {
            package: "ca-certificates".into(),
            version: Some("20230311+deb12u1".into()),
            host_path: "/etc/ssl/certs/ca-certificates.crt".into(),
        }];
        let input = SbomInput {
            image_name: "img",
            version: "0.1.0",
            suffix: "amd64-v3",
            created: "2026-01-01T00:00:00Z",
            source_url: "https://github.com/o/r",
            revision: "abc",
            binary_path: "/usr/local/bin/app",
            binary: b"\x7fELF",
            graph: &g,
            packages: &pk,
            checksums: &sums,
            debian: &deb,
            rustc_version: "rustc 1.95.0 (abc 2026-04-14)",
            tool: "xtask-0.1.0",
        };
        let doc = spdx(&input);
        assert_eq!(doc, spdx(&input), "deterministic");
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let pkgs = doc["packages"].as_array().unwrap();
        let a = pkgs.iter().find(|p| p["name"] == "a").unwrap();
        assert_eq!(a["licenseDeclared"], "MIT OR Apache-2.0");
        assert_eq!(a["checksums"][0]["checksumValue"], "ab".repeat(32));
        assert_eq!(
            a["downloadLocation"],
            "https://crates.io/api/v1/crates/a/1.0.0/download"
        );
        let app = pkgs.iter().find(|p| p["name"] == "app").unwrap();
        assert_eq!(app["downloadLocation"], "git+https://github.com/o/r@abc");
        assert!(
            pkgs.iter()
                .any(|p| p["name"] == "ca-certificates" && p["versionInfo"] == "20230311+deb12u1")
        );
        let rels = doc["relationships"].as_array().unwrap();
        assert!(rels.iter().any(|r| r["relationshipType"] == "DEPENDS_ON"
            && r["spdxElementId"] == "SPDXRef-Crate-app-0.1.0"
            && r["relatedSpdxElement"] == "SPDXRef-Crate-a-1.0.0"));
        let sha256 = &doc["files"][0]["checksums"][1]["checksumValue"];
        assert_eq!(
            sha256.as_str().unwrap(),
            hex::encode(Sha256::digest(b"\x7fELF"))
        );
        assert!(
            doc["documentNamespace"]
                .as_str()
                .unwrap()
                .starts_with("https://github.com/o/r/spdx/img-0.1.0-amd64-v3-")
        );
    }

    #[test]
    fn cargo_license_syntax_is_converted() {
        assert_eq!(spdx_license(Some("MIT/Apache-2.0")), "MIT OR Apache-2.0");
        assert_eq!(
            spdx_license(Some("Apache-2.0 WITH LLVM-exception")),
            "Apache-2.0 WITH LLVM-exception"
        );
        assert_eq!(spdx_license(None), "NOASSERTION");
    }
}
