//! The language switch returns only to a page of the dashboard itself: a `back` that a browser
//! would follow to another origin, or that cannot be a header, sends the user to the start page
//! (issue 13, findings 1 and 8), on the real fp-dashboard.

use fp_testkit::environment::{TestEnvironment, free_local_address};
use fp_testkit::pipeline::start_dashboard;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_switch_never_redirects_off_site() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashboard-redirects").await?;
    // The switch needs no api: it sets a cookie and redirects.
    let (dashboard, _) = start_dashboard(&mut env, free_local_address()?).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for (back, expected) in [
        ("/webhooks/logs%3Fpage%3D2", "/webhooks/logs?page=2"),
        ("/%09/evil.example/x", "/"),
        ("//evil.example/x", "/"),
        ("https://evil.example/x", "/"),
        ("/%5Cevil.example", "/"),
        ("/%0d%0aX:y", "/"),
    ] {
        let response = http
            .get(format!("http://{dashboard}/lang/de?back={back}"))
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 303, "back={back}");
        assert_eq!(
            response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok()),
            Some(expected),
            "back={back}"
        );
    }
    env.finish().await
}
