//! `fpctl check-url` and the api's save-time check answer as the dispatcher would, DNS included.
//! Names get their addresses from a hosts file (`FP__DISPATCHER__HOSTS_FILE`; this machine has no
//! outside DNS), and a name is blocked when any one of its answers is. The operator's tool names
//! the refused address; the api tells a tenant only what kind of address it is.

use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, start_api};
use serde_json::{Value, json};

const HOSTS_FILE: &str = "\
# address name...
10.0.0.5 internal.example.test
93.184.216.34 public.example.test mixed.example.test
192.168.1.1 mixed.example.test
";

/// A fresh environment whose processes resolve names through [`HOSTS_FILE`].
async fn environment_with_hosts_file(label: &str) -> anyhow::Result<TestEnvironment> {
    let mut env = TestEnvironment::new(label).await?;
    let hosts_file = env.dir.join("hosts");
    std::fs::write(&hosts_file, HOSTS_FILE)?;
    env.set(
        "FP__DISPATCHER__HOSTS_FILE",
        hosts_file.display().to_string(),
    );
    Ok(env)
}

/// `fpctl check-url <url>`: its exit code and stdout.
async fn check_url(env: &TestEnvironment, url: &str) -> anyhow::Result<(Option<i32>, String)> {
    let output = env.fpctl_output(&["check-url", url]).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // Exit 2 is fpctl's own failure (bad config, unreadable hosts file), not a verdict.
    anyhow::ensure!(
        output.status.code() != Some(2),
        "fpctl check-url {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.code(), stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_url_names_the_range_that_blocks_a_target() -> anyhow::Result<()> {
    let env = environment_with_hosts_file("checkurl").await?;
    // None: allowed. Some(text): blocked, with `text` in the reason.
    let cases = [
        ("https://10.0.0.1/", Some("private range 10.0.0.0/8")),
        (
            "https://[::ffff:169.254.169.254]/",
            Some(
                "IPv4-mapped form of 169.254.169.254, which is in the link-local range 169.254.0.0/16",
            ),
        ),
        ("https://metadata.google.internal/", Some("cloud metadata")),
        (
            "https://internal.example.test/hook",
            Some("address 10.0.0.5 is not allowed: private range 10.0.0.0/8"),
        ),
        // The public answer does not excuse the private one.
        (
            "https://mixed.example.test/hook",
            Some("address 192.168.1.1 is not allowed: private range 192.168.0.0/16"),
        ),
        ("https://93.184.216.34/", None),
        ("https://public.example.test/hook", None),
    ];
    for (url, expected) in cases {
        let (code, stdout) = check_url(&env, url).await?;
        match expected {
            Some(reason) => {
                assert_eq!(code, Some(1), "{url}: {stdout}");
                assert!(stdout.starts_with("blocked: "), "{url}: {stdout}");
                assert!(
                    stdout.contains(reason),
                    "{url}: `{stdout}` should say {reason}"
                );
            }
            None => {
                assert_eq!(code, Some(0), "{url}: {stdout}");
                assert_eq!(stdout.trim(), "allowed", "{url}");
            }
        }
    }
    env.finish().await
}

/// `PUT /api/v2/webhooks/config` with `url`: status and JSON body.
async fn put_config(api: &TenantApi, url: &str) -> anyhow::Result<(u16, Value)> {
    let body = json!({"url": url, "events": ["submission.created"]}).to_string();
    api.send(reqwest::Method::PUT, "/api/v2/webhooks/config", Some(&body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_a_config_judges_the_addresses_a_name_resolves_to() -> anyhow::Result<()> {
    let mut env = environment_with_hosts_file("savecheck").await?;
    let api_address = start_api(&mut env).await?;
    let api = TenantApi::create(&env, api_address, "Acme").await?;

    for (url, address, range) in [
        (
            "https://internal.example.test/hook",
            "10.0.0.5",
            "10.0.0.0/8",
        ),
        (
            "https://mixed.example.test/hook",
            "192.168.1.1",
            "192.168.0.0/16",
        ),
    ] {
        let (status, body) = put_config(&api, url).await?;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["field"], "url", "{body}");
        assert_eq!(body["error"]["reason"], "private", "{body}");
        // The policy's reason, in words a tenant can act on...
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("private or internal") && message.contains("webhooks may not call"),
            "{url}: {message}"
        );
        // ...but not what the name resolves to: a tenant must not map internal names.
        let answer = body.to_string();
        for revealing in [address, range, "10.0.0", "192.168"] {
            assert!(
                !answer.contains(revealing),
                "{url}: `{revealing}` in {answer}"
            );
        }
        // The operator's tool names both.
        let (_, verdict) = check_url(&env, url).await?;
        assert!(
            verdict.contains(address) && verdict.contains(range),
            "{url}: {verdict}"
        );
    }

    // A name that does not resolve is saved (DNS may lag a new endpoint); deliveries judge it.
    for url in [
        "https://nowhere.example.test/hook",
        "https://public.example.test/hook",
    ] {
        let (status, body) = put_config(&api, url).await?;
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body["url"], url);
    }

    env.finish().await
}
