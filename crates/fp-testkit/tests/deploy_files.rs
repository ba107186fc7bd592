//! Static checks of the container files: every `FP__` setting the compose files and their scripts
//! name is a real key of `defaults.toml`, every program they start is a binary the workspace
//! builds and the image holds, and the two Dockerfiles' runtime stages agree. The stack itself runs
//! in `deploy/docker/compose-test.sh`.
//!
//! The Kubernetes overlays (`deploy/kubernetes/`) are checked on paper only, as no cluster runs
//! here: each renders with `kubectl kustomize`; its objects pass their schemas (Kubernetes' own
//! through kubernetes-validate, the operators' through their CRDs, `check-rendered.py`); and the
//! same settings, binaries, ports, probes and drain time hold as for compose, plus the queues KEDA
//! watches and the dispatcher's egress wall.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

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

fn defaults() -> toml::Table {
    read("crates/fp-settings/src/defaults.toml")
        .parse()
        .expect("defaults.toml parses")
}

/// The `(section, key)` of each setting that has no default, which `defaults.toml` documents as a
/// commented-out example in its section (`# quorum_initial_group_size = 3`): TOML has no null.
fn optional_settings() -> BTreeSet<(String, String)> {
    let mut section = String::new();
    let mut found = BTreeSet::new();
    for line in read("crates/fp-settings/src/defaults.toml").lines() {
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = name.to_owned();
        } else if let Some((key, _)) = line
            .strip_prefix("# ")
            .and_then(|rest| rest.split_once(" = "))
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            found.insert((section.clone(), key.to_owned()));
        }
    }
    found
}

/// The variables of `used` that name no key of `defaults.toml`.
fn unknown_settings(used: &BTreeSet<String>) -> Vec<&String> {
    let defaults = defaults();
    let optional = optional_settings();
    used.iter()
        .filter(|variable| {
            let parts: Vec<&str> = variable.split("__").collect();
            let [_, section, key] = parts.as_slice() else {
                return true;
            };
            let (section, key) = (section.to_lowercase(), key.to_lowercase());
            let has_default = defaults
                .get(&section)
                .and_then(|values| values.get(&key))
                .is_some();
            !has_default && !optional.contains(&(section, key))
        })
        .collect()
}

/// What a deployment cannot run without, so an empty scan cannot pass.
const NEEDED_SETTINGS: [&str; 10] = [
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
];

#[test]
fn every_setting_named_in_the_compose_files_is_a_real_key() {
    let mut used = BTreeSet::new();
    for file in SETTINGS_FILES {
        used.extend(settings_variables(&read(file)));
    }
    let unknown = unknown_settings(&used);
    assert!(
        unknown.is_empty(),
        "not settings of crates/fp-settings/src/defaults.toml (FP__SECTION__KEY): {unknown:?}"
    );
    for needed in NEEDED_SETTINGS {
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

/// `name` of a line `  name:` that opens a block of the compose file (a service under `services:`).
fn service_header(line: &str) -> Option<&str> {
    line.strip_prefix("  ")
        .and_then(|rest| rest.strip_suffix(':'))
        .filter(|name| !name.starts_with(' ') && !name.contains(' '))
}

/// The services of a compose file that run an image of someone else's (Prometheus, Jaeger): they
/// name their own image, and it is not ours.
fn third_party_services(text: &str) -> BTreeSet<String> {
    let mut third_party = BTreeSet::new();
    let mut service = None;
    for line in text.lines() {
        if let Some(name) = service_header(line) {
            service = Some(name.to_owned());
        } else if let (Some(name), Some(image)) =
            (&service, line.trim_start().strip_prefix("image:"))
            && line.starts_with("    ")
            && !image.contains("feedbackpulse")
            && !image.contains("FP_IMAGE")
        {
            third_party.insert(name.clone());
        }
    }
    third_party
}

/// The FeedbackPulse programs the compose file `file` starts. Commands are written as one-line
/// JSON-style lists; `sh` runs either `-ec <script>` or a script bind-mounted from the repository.
fn compose_programs(file: &str) -> Vec<String> {
    let text = read(file);
    let third_party = third_party_services(&text);
    let mut programs = Vec::new();
    let mut service = String::new();
    for line in text.lines() {
        if let Some(name) = service_header(line) {
            name.clone_into(&mut service);
        }
        let Some(value) = line.trim_start().strip_prefix("command:") else {
            continue;
        };
        if third_party.contains(&service) {
            continue;
        }
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

// ---- Kubernetes (deploy/kubernetes/) ----

const OVERLAYS: [&str; 2] = ["dev", "production"];
/// The API version the rendered objects are validated against: one kubernetes-validate ships.
const KUBERNETES_VERSION: &str = "1.32.0";

/// Runs a program, returning its stdout, or panics with what it printed.
fn run(what: &str, command: &mut Command, stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = command
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{what} cannot start: {err}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("stdin takes the input");
    }
    drop(input);
    let output = child.wait_with_output().expect("the process ends");
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A kubectl that renders kustomizations, installed with apt-get if missing; the test fails when
/// there is none.
fn kubectl() -> String {
    let path = run(
        "deploy/local/ensure-kubectl.sh",
        &mut Command::new("deploy/local/ensure-kubectl.sh"),
        None,
    );
    String::from_utf8(path).expect("a path").trim().to_owned()
}

/// The python of the venv with kubernetes-validate and jsonschema that `make test` installs.
fn kubernetes_python() -> PathBuf {
    const HOW: &str = "run `make test`, or run `deploy/local/ensure-kubernetes-validate.sh` and set \
                       FP_KUBERNETES_PYTHON to the path it prints";
    let path = PathBuf::from(
        std::env::var_os("FP_KUBERNETES_PYTHON")
            .unwrap_or_else(|| panic!("FP_KUBERNETES_PYTHON is not set: {HOW}")),
    );
    assert!(
        path.is_file(),
        "FP_KUBERNETES_PYTHON names {}, which does not exist: {HOW}",
        path.display()
    );
    path
}

/// The objects of an overlay, rendered and validated against their schemas (once per run).
fn rendered(overlay: &str) -> &'static [Value] {
    static RENDERED: OnceLock<BTreeMap<&'static str, Vec<Value>>> = OnceLock::new();
    let all = RENDERED.get_or_init(|| {
        let kubectl = kubectl();
        let python = kubernetes_python();
        OVERLAYS
            .into_iter()
            .map(|overlay| {
                let directory = format!("deploy/kubernetes/overlays/{overlay}");
                let yaml = run(
                    &format!("kubectl kustomize {directory}"),
                    Command::new(&kubectl).args(["kustomize", &directory]),
                    None,
                );
                let json = run(
                    &format!(
                        "deploy/kubernetes/check-rendered.py (the schemas) on overlay {overlay}"
                    ),
                    Command::new(&python)
                        .args(["deploy/kubernetes/check-rendered.py", KUBERNETES_VERSION]),
                    Some(&yaml),
                );
                let objects: Vec<Value> =
                    serde_json::from_slice(&json).expect("check-rendered.py prints a JSON list");
                (overlay, objects)
            })
            .collect()
    });
    &all[overlay]
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The pod templates of FeedbackPulse's own workloads (Deployments and the Job), by name.
fn feedbackpulse_pods(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
        .filter(|o| {
            o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"]
                == "feedbackpulse"
        })
        .map(|o| {
            (
                format!("{} {}", text(&o["kind"]), text(&o["metadata"]["name"])),
                &o["spec"]["template"]["spec"],
            )
        })
        .collect()
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

#[test]
fn kubernetes_overlays_render_and_pass_their_schemas() {
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        for (kind, name) in [
            ("Deployment", "fp-api"),
            ("Deployment", "fp-dashboard"),
            ("Deployment", "fp-dispatcher"),
            ("Deployment", "fp-log-ingest"),
            ("Job", "fp-migrate"),
            ("Service", "fp-api"),
            ("Service", "fp-dashboard"),
            ("NetworkPolicy", "fp-dispatcher-internet"),
        ] {
            assert!(
                object(objects, kind, name).is_some(),
                "overlay {overlay} renders no {kind} {name}"
            );
        }
    }
    let production = rendered("production");
    for (kind, name) in [
        ("HorizontalPodAutoscaler", "fp-api"),
        ("HorizontalPodAutoscaler", "fp-dashboard"),
        ("ScaledObject", "fp-dispatcher"),
        ("ScaledObject", "fp-log-ingest"),
        ("RabbitmqCluster", "rabbitmq"),
        ("Cluster", "postgres"),
    ] {
        assert!(
            object(production, kind, name).is_some(),
            "overlay production renders no {kind} {name}"
        );
    }
    let rabbitmq = object(production, "RabbitmqCluster", "rabbitmq").expect("checked above");
    assert_eq!(rabbitmq["spec"]["replicas"], 3, "RabbitMQ runs three nodes");
    let postgres = object(production, "Cluster", "postgres").expect("checked above");
    assert_eq!(
        postgres["spec"]["instances"], 2,
        "PostgreSQL runs a primary and one replica"
    );
    // Every process that may declare the queues first declares them replicated on all three nodes.
    for (at, pod) in feedbackpulse_pods(production) {
        for container in array(&pod["containers"]) {
            let env = environment(&at, container);
            if env.contains_key("FP__BROKER__URL") {
                assert_eq!(
                    env.get("FP__BROKER__QUORUM_INITIAL_GROUP_SIZE")
                        .map(String::as_str),
                    Some("3"),
                    "production {at}: quorum queues not replicated on the three RabbitMQ nodes"
                );
            }
        }
    }
}

#[test]
fn every_setting_named_in_the_kubernetes_overlays_is_a_real_key() {
    for overlay in OVERLAYS {
        let used = settings_variables(&serde_json::to_string(rendered(overlay)).expect("JSON"));
        let unknown = unknown_settings(&used);
        assert!(
            unknown.is_empty(),
            "overlay {overlay}: not settings of crates/fp-settings/src/defaults.toml \
             (FP__SECTION__KEY): {unknown:?}"
        );
        for needed in NEEDED_SETTINGS {
            assert!(
                used.contains(needed),
                "overlay {overlay} does not set {needed}"
            );
        }
    }
}

/// Each service's health setting (`/healthz`, `/readyz`, `/metrics`: where it is probed and
/// scraped) and, for the two that serve users, its public setting (where its Service sends).
const LISTEN_SETTINGS: [(&str, &str, Option<&str>); 4] = [
    ("fp-api", "FP__API__HEALTH_LISTEN", Some("FP__API__LISTEN")),
    (
        "fp-dashboard",
        "FP__DASHBOARD__HEALTH_LISTEN",
        Some("FP__DASHBOARD__LISTEN"),
    ),
    ("fp-dispatcher", "FP__DISPATCHER__HEALTH_LISTEN", None),
    ("fp-log-ingest", "FP__LOG_INGEST__HEALTH_LISTEN", None),
];

#[test]
fn kubernetes_containers_run_workspace_binaries_listening_where_probed() {
    let built = workspace_binaries();
    let in_image = &image_binaries()[0].1;
    // The probe paths are the ones fp-telemetry's health listener serves, for every service.
    let health = read("crates/fp-telemetry/src/health.rs");
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(
            health.contains(&format!("\"{path}\" =>")),
            "crates/fp-telemetry/src/health.rs no longer serves {path}"
        );
    }
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        let mut started = BTreeSet::new();
        let mut images = BTreeSet::new();
        for (workload, pod) in feedbackpulse_pods(objects) {
            for container in array(&pod["containers"]) {
                let at = format!("overlay {overlay}, {workload}");
                images.insert(text(&container["image"]).to_owned());
                let argv: Vec<&str> = array(&container["command"]).iter().map(text).collect();
                let programs = match argv.as_slice() {
                    ["sh", "-ec", script] => feedbackpulse_programs(script),
                    [program, ..] => vec![(*program).to_owned()],
                    [] => {
                        panic!("{at}: a container without a command runs the image's fpctl --help")
                    }
                };
                for program in programs {
                    assert!(
                        built.contains(&program),
                        "{at} runs {program}, which the workspace does not build ({built:?})"
                    );
                    assert!(
                        in_image.contains(&program),
                        "{at} runs {program}, which the image lacks"
                    );
                    started.insert(program);
                }
                let env = environment(&at, container);
                check_listen_and_probes(&at, &argv, container, &env, objects);
                check_grace_period(&at, pod, container, &env);
                check_hardening(&at, pod, container);
            }
        }
        for service in [
            "fp-api",
            "fp-dashboard",
            "fp-dispatcher",
            "fp-log-ingest",
            "fpctl",
        ] {
            assert!(
                started.contains(service),
                "overlay {overlay} never starts {service}"
            );
        }
        assert_eq!(
            images.len(),
            1,
            "overlay {overlay}: every FeedbackPulse container runs the one image, not {images:?}"
        );
    }
}

/// A container's environment by name, checking that each `$(NAME)` in a value names a variable
/// defined above it (Kubernetes leaves any other reference as it is).
fn environment(at: &str, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for variable in array(&container["env"]) {
        let name = text(&variable["name"]).to_owned();
        let value = text(&variable["value"]).to_owned();
        for reference in value.split("$(").skip(1) {
            let referenced = reference.split(')').next().unwrap_or_default();
            assert!(
                env.contains_key(referenced),
                "{at}: {name} refers to $({referenced}), which is not defined above it"
            );
        }
        env.insert(name, value);
    }
    env
}

fn check_listen_and_probes(
    at: &str,
    argv: &[&str],
    container: &Value,
    env: &BTreeMap<String, String>,
    objects: &[Value],
) {
    let Some((service, health_setting, public_setting)) = LISTEN_SETTINGS
        .iter()
        .find(|(service, _, _)| argv.first() == Some(service))
    else {
        return;
    };
    let ports: Vec<&Value> = array(&container["ports"]).iter().collect();
    // The port a setting binds on every interface, declared by the container.
    let declared_port = |setting: &str| {
        let listen = env.get(setting).unwrap_or_else(|| {
            panic!("{at}: {setting} is not set, so {service} listens on loopback only")
        });
        let port: u64 = listen
            .strip_prefix("0.0.0.0:")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("{at}: {setting}={listen}, not 0.0.0.0:<port>"));
        let declared = ports
            .iter()
            .find(|p| p["containerPort"] == port)
            .unwrap_or_else(|| {
                panic!("{at}: {setting} is port {port}, but the container declares {ports:?}")
            });
        (port, *declared)
    };
    let (health_port, _) = declared_port(health_setting);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            (text(&get["path"]), get["port"].as_u64()),
            (path, Some(health_port)),
            "{at}: the {probe} must GET {path} on {health_setting}'s port {health_port} (never the public port)"
        );
    }
    let Some(public_setting) = public_setting else {
        return;
    };
    let (port, declared) = declared_port(public_setting);
    assert_ne!(
        port, health_port,
        "{at}: {public_setting} and {health_setting} share port {port}"
    );
    // A Service of this workload sends its traffic to the public port.
    for svc in objects.iter().filter(|o| o["kind"] == "Service") {
        if svc["spec"]["selector"]["app.kubernetes.io/name"] != *service {
            continue;
        }
        for service_port in array(&svc["spec"]["ports"]) {
            let target = &service_port["targetPort"];
            assert!(
                *target == port || *target == declared["name"],
                "{at}: Service {} sends to {target}, not {public_setting}'s port {port}",
                svc["metadata"]["name"]
            );
        }
    }
}

/// SIGTERM to SIGKILL must span the preStop pause and the whole drain.
fn check_grace_period(at: &str, pod: &Value, container: &Value, env: &BTreeMap<String, String>) {
    let drain_ms: u64 = match env.get("FP__LIFECYCLE__DRAIN_TIMEOUT_MS") {
        Some(value) => value.parse().expect("a number of milliseconds"),
        None => defaults()["lifecycle"]["drain_timeout_ms"]
            .as_integer()
            .and_then(|ms| u64::try_from(ms).ok())
            .expect("lifecycle.drain_timeout_ms"),
    };
    let pause_ms = match array(&container["lifecycle"]["preStop"]["exec"]["command"])
        .iter()
        .map(text)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => 0,
        ["sleep", seconds] => seconds.parse::<u64>().expect("whole seconds") * 1000,
        other => panic!("{at}: a preStop this test does not know: {other:?}"),
    };
    // Kubernetes' default when none is set.
    let grace_ms = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30) * 1000;
    assert!(
        grace_ms > pause_ms + drain_ms,
        "{at}: terminationGracePeriodSeconds ({} s) must exceed the preStop pause ({} s) plus \
         lifecycle.drain_timeout_ms ({drain_ms} ms)",
        grace_ms / 1000,
        pause_ms / 1000
    );
}

fn check_hardening(at: &str, pod: &Value, container: &Value) {
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"], true,
        "{at}: runAsNonRoot"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{at}: no service account token: nothing here calls the Kubernetes API"
    );
    let security = &container["securityContext"];
    assert_eq!(
        security["readOnlyRootFilesystem"], true,
        "{at}: readOnlyRootFilesystem"
    );
    assert_eq!(
        security["allowPrivilegeEscalation"], false,
        "{at}: allowPrivilegeEscalation"
    );
    assert_eq!(
        security["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{at}: drop ALL capabilities"
    );
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "{at}: no {resource} in resources.{bound}"
            );
        }
    }
}

#[test]
fn keda_scales_the_queue_workers_on_their_real_queues() {
    let objects = rendered("production");
    let namespace = defaults()["broker"]["namespace"]
        .as_str()
        .expect("broker.namespace")
        .to_owned();
    let names = fp_broker::Names::new(&namespace);
    let kubernetes_namespace = text(&objects[0]["metadata"]["namespace"]);
    for (deployment, queues) in [
        (
            "fp-dispatcher",
            vec![&names.dispatcher_queue, &names.retry_queue],
        ),
        ("fp-log-ingest", vec![&names.attempts_queue]),
    ] {
        let scaled = object(objects, "ScaledObject", deployment)
            .unwrap_or_else(|| panic!("no ScaledObject {deployment}"));
        let target = text(&scaled["spec"]["scaleTargetRef"]["name"]);
        assert!(
            object(objects, "Deployment", target).is_some(),
            "ScaledObject {deployment} scales {target}, which is no Deployment"
        );
        let triggers = array(&scaled["spec"]["triggers"]);
        let watched: BTreeSet<&str> = triggers
            .iter()
            .map(|t| text(&t["metadata"]["queueName"]))
            .collect();
        let expected: BTreeSet<&str> = queues.iter().map(|q| q.as_str()).collect();
        assert_eq!(
            watched, expected,
            "ScaledObject {deployment} must watch the queues fp_broker::Names gives it"
        );
        for trigger in triggers {
            assert_eq!(trigger["type"], "rabbitmq");
            // KEDA's operator resolves names in its own namespace.
            let host = text(&trigger["metadata"]["host"]);
            assert!(
                host.contains(&format!("rabbitmq.{kubernetes_namespace}.svc:")),
                "ScaledObject {deployment}: host {host} is not the RabbitMQ Service of namespace \
                 {kubernetes_namespace}"
            );
        }
    }
}

#[test]
fn only_the_dispatcher_leaves_the_cluster_and_never_for_a_private_range() {
    const PRIVATE: [&str; 9] = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ];
    for overlay in OVERLAYS {
        let objects = rendered(overlay);
        let mut with_ip_egress = BTreeSet::new();
        for policy in objects.iter().filter(|o| o["kind"] == "NetworkPolicy") {
            let name = text(&policy["metadata"]["name"]);
            for rule in array(&policy["spec"]["egress"]) {
                let blocks: Vec<&Value> = array(&rule["to"])
                    .iter()
                    .map(|peer| &peer["ipBlock"])
                    .filter(|block| !block.is_null())
                    .collect();
                // A rule without peers allows every destination.
                assert!(
                    !array(&rule["to"]).is_empty(),
                    "overlay {overlay}: NetworkPolicy {name} allows egress anywhere"
                );
                if blocks.is_empty() {
                    continue;
                }
                with_ip_egress.insert(policy["spec"]["podSelector"].to_string());
                let excepted: BTreeSet<&str> = blocks
                    .iter()
                    .flat_map(|block| array(&block["except"]))
                    .map(text)
                    .collect();
                let missing: Vec<&str> = PRIVATE
                    .into_iter()
                    .filter(|range| !excepted.contains(range))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "overlay {overlay}: NetworkPolicy {name} lets pods reach {missing:?}"
                );
            }
        }
        assert_eq!(
            with_ip_egress,
            BTreeSet::from([
                serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "fp-dispatcher"}})
                    .to_string()
            ]),
            "overlay {overlay}: only the dispatcher may reach addresses outside the cluster"
        );
        assert!(
            object(objects, "NetworkPolicy", "feedbackpulse-default-deny").is_some_and(|p| {
                p["spec"]["policyTypes"] == serde_json::json!(["Ingress", "Egress"])
            }),
            "overlay {overlay}: FeedbackPulse's pods are not isolated by default"
        );
    }
}
