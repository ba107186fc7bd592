//! Static checks of the container files: every `FP__` setting the compose files and their scripts
//! name is a real key of `defaults.toml`, every program they start is a binary the workspace
//! builds and the image holds, and the two Dockerfiles' runtime stages agree. The stack itself runs
//! in `deploy/docker/compose-test.sh`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {relative}: {err}"))
}

const COMPOSE_FILES: [&str; 2] = ["docker-compose.yml", "docker-compose.local.yml"];
/// Files that set or read FeedbackPulse settings for the compose stack.
const SETTINGS_FILES: [&str; 4] = [
    "docker-compose.yml",
    "docker-compose.local.yml",
    ".env.example",
    "deploy/docker/demo-seed.sh",
];

/// Every `FP__...` word of `text`, e.g. `FP__LOG_INGEST__HEALTH_LISTEN`.
fn settings_variables(text: &str) -> BTreeSet<String> {
    text.match_indices("FP__")
        .map(|(start, _)| {
            text[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_setting_named_in_the_compose_files_is_a_real_key() {
    let defaults: toml::Table = read("crates/fp-settings/src/defaults.toml")
        .parse()
        .expect("defaults.toml parses");
    let mut used = BTreeSet::new();
    for file in SETTINGS_FILES {
        used.extend(settings_variables(&read(file)));
    }
    let unknown: Vec<&String> = used
        .iter()
        .filter(|variable| {
            let parts: Vec<&str> = variable.split("__").collect();
            let [_, section, key] = parts.as_slice() else {
                return true;
            };
            defaults
                .get(&section.to_lowercase())
                .and_then(|section| section.get(key.to_lowercase()))
                .is_none()
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "not settings of crates/fp-settings/src/defaults.toml (FP__SECTION__KEY): {unknown:?}"
    );
    // The scan sees what the stack cannot run without, so an empty scan cannot pass.
    for needed in [
        "FP__DATABASE__URL",
        "FP__DATABASE__READONLY_URL",
        "FP__BROKER__URL",
        "FP__API__LISTEN",
        "FP__DASHBOARD__LISTEN",
        "FP__DASHBOARD__API_URL",
        "FP__DISPATCHER__HEALTH_LISTEN",
        "FP__LOG_INGEST__HEALTH_LISTEN",
        "FP__SECRETS__MASTER_KEY",
        "FP__DASHBOARD__SESSION_KEY",
    ] {
        assert!(
            used.contains(needed),
            "{needed} is not set by the compose files"
        );
    }
}

/// The names of the binaries the workspace builds, from `cargo metadata`.
fn workspace_binaries() -> BTreeSet<String> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|package| package["targets"].as_array().expect("targets"))
        .filter(|target| {
            target["kind"]
                .as_array()
                .expect("kind")
                .iter()
                .any(|k| k == "bin")
        })
        .map(|target| target["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The words of a shell script that name a FeedbackPulse program (`fpctl`, `fp-api`, ...), comments
/// left out.
fn feedbackpulse_programs(script: &str) -> Vec<String> {
    script
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split(|c: char| c.is_whitespace() || ";&|()".contains(c)))
        .filter(|word| {
            word.starts_with("fp")
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_owned)
        .collect()
}

/// The FeedbackPulse programs the compose file `file` starts. Commands are written as one-line
/// JSON-style lists; `sh` runs either `-ec <script>` or a script bind-mounted from the repository.
fn compose_programs(file: &str) -> Vec<String> {
    let text = read(file);
    let mut programs = Vec::new();
    for line in text.lines() {
        let Some(value) = line.trim_start().strip_prefix("command:") else {
            continue;
        };
        let argv: Vec<String> = serde_json::from_str(value.trim()).unwrap_or_else(|err| {
            panic!("{file}: write the command as a one-line list of quoted strings ({err}): {line}")
        });
        match argv
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["sh", "-ec", script] => programs.extend(feedbackpulse_programs(script)),
            ["sh", path] => {
                let mounted = text
                    .lines()
                    .filter_map(|line| line.trim_start().strip_prefix("- ./"))
                    .find_map(|mount| mount.strip_suffix(&format!(":{path}:ro")))
                    .unwrap_or_else(|| {
                        panic!("{file}: {path} is not bind-mounted from the repository")
                    });
                programs.extend(feedbackpulse_programs(&read(mounted)));
            }
            [program, ..] => programs.push((*program).to_owned()),
            [] => panic!("{file}: an empty command: {line}"),
        }
    }
    programs
}

/// The binaries each image description copies in: the Dockerfile's builder stage, the prebuilt
/// Dockerfile's COPY and local-images.sh's list.
fn image_binaries() -> [(&'static str, BTreeSet<String>); 3] {
    let dockerfile = read("deploy/docker/Dockerfile");
    let from_source = dockerfile
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .map(str::to_owned)
        .collect();
    let prebuilt = read("deploy/docker/Dockerfile.prebuilt");
    let copy = prebuilt
        .lines()
        .find_map(|line| line.strip_prefix("COPY "))
        .expect("Dockerfile.prebuilt has a COPY");
    let copied: Vec<&str> = copy.split_whitespace().collect();
    let (destination, sources) = copied.split_last().expect("COPY names its files");
    assert_eq!(
        *destination, "/usr/local/bin/",
        "Dockerfile.prebuilt copies into /usr/local/bin/"
    );
    let script = read("deploy/docker/local-images.sh");
    let listed = script
        .lines()
        .find_map(|line| line.strip_prefix("binaries=("))
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("local-images.sh lists binaries=(...)")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    [
        ("Dockerfile", from_source),
        (
            "Dockerfile.prebuilt",
            sources.iter().map(|s| (*s).to_owned()).collect(),
        ),
        ("local-images.sh", listed),
    ]
}

#[test]
fn every_program_the_compose_files_start_is_a_workspace_binary_in_the_image() {
    let built = workspace_binaries();
    let images = image_binaries();
    let (_, in_image) = &images[0];
    let mut started = BTreeSet::new();
    for file in COMPOSE_FILES {
        for program in compose_programs(file) {
            assert!(
                built.contains(&program),
                "{file} runs {program}, which the workspace does not build ({built:?})"
            );
            assert!(
                in_image.contains(&program),
                "{file} runs {program}, which the image lacks"
            );
            started.insert(program);
        }
    }
    for service in [
        "fp-api",
        "fp-dispatcher",
        "fp-log-ingest",
        "fp-dashboard",
        "fpctl",
        "fp-demo-receiver",
    ] {
        assert!(
            started.contains(service),
            "docker-compose.yml never starts {service}"
        );
    }
}

#[test]
fn both_dockerfiles_build_the_same_runtime_image() {
    let built = workspace_binaries();
    let images = image_binaries();
    for (name, binaries) in &images {
        assert_eq!(
            binaries, &images[0].1,
            "{name} and Dockerfile copy different binaries"
        );
        let foreign: Vec<_> = binaries.difference(&built).collect();
        assert!(
            foreign.is_empty(),
            "{name} names binaries the workspace does not build: {foreign:?}"
        );
    }
    // From the runtime FROM on, the files differ only in where the binaries come from.
    let runtime_stage = |file: &str| -> Vec<String> {
        let text = read(file);
        let start = text
            .find("FROM ${RUNTIME_IMAGE} AS runtime")
            .unwrap_or_else(|| panic!("{file} has no `FROM ${{RUNTIME_IMAGE}} AS runtime`"));
        text[start..]
            .lines()
            .filter(|line| !line.starts_with("COPY "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        runtime_stage("deploy/docker/Dockerfile"),
        runtime_stage("deploy/docker/Dockerfile.prebuilt"),
        "the runtime stages of Dockerfile and Dockerfile.prebuilt differ"
    );
}
