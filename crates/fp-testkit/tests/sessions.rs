//! Server-side dashboard sessions, log-in throttling and https, on the real fp-api and
//! fp-dashboard (issue 13): a copied cookie stops working at log-out and at a password change, as
//! a cookie and as `Authorization: Session`; sessions end when idle and when old; users list and
//! end their sessions, a superadmin ends a user's; a session cannot manage API keys; a guesser is
//! throttled without locking the owner out, also across an api restart; `dashboard.public_url`
//! alone decides HSTS and `Secure` cookies.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use fp_testkit::dashboard::{
    form_body, hidden_field_after, http_client, http_client_from, http_log_in,
    http_log_in_forwarded, http_session_cookie,
};
use fp_testkit::environment::{TestEnvironment, free_local_address};
use fp_testkit::pipeline::{
    TenantApi, start_api, start_api_on, start_api_with_health, start_dashboard,
};
use fp_testkit::sessions::{UserApi, create_user};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const EMAIL: &str = "admin@acme.example";
const PASSWORD: &str = "correct horse battery staple";
const CURRENT: &str = "/api/v2/sessions/current";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// A plain client that sends only the cookie it is given and follows no redirect: a copied cookie
/// in another browser.
struct CookieHolder {
    base: String,
    cookie: String,
    http: reqwest::Client,
}

impl CookieHolder {
    fn new(base: &str, cookie: &str) -> anyhow::Result<Self> {
        Ok(CookieHolder {
            base: base.to_owned(),
            cookie: cookie.to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    /// Status, `Location` and body of `GET path`.
    async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, String, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, format!("fp_session={}", self.cookie))
            .send()
            .await?;
        let status = response.status();
        let location = location(&response);
        Ok((status, location, response.text().await?))
    }

    /// Posts `form` to `path` with the CSRF token of the form at `action` on the page at `page`.
    async fn post_form(
        &self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String)> {
        let (status, _, html) = self.get(page).await?;
        anyhow::ensure!(status == StatusCode::OK, "{page} answered {status}: {html}");
        let token = hidden_field_after(&html, &format!(r#"action="{action}""#), "csrf_token")
            .with_context(|| format!("no form for {action} on {page}"))?;
        let mut pairs = vec![("csrf_token", token.as_str())];
        pairs.extend_from_slice(fields);
        let response = self
            .http
            .post(format!("{}{action}", self.base))
            .header(header::COOKIE, format!("fp_session={}", self.cookie))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(&pairs))
            .send()
            .await?;
        Ok((response.status(), location(&response)))
    }
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Signed out: the account page sends the holder to the log-in form.
async fn assert_signed_out(holder: &CookieHolder) -> anyhow::Result<()> {
    let (status, location, _) = holder.get("/account").await?;
    anyhow::ensure!(
        status == StatusCode::SEE_OTHER && location == "/login",
        "the cookie still opens the account page ({status}, {location})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_cookie_dies_with_log_out_and_with_a_password_change() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("session_end").await?;
    let api = start_api(&mut env).await?;
    let (dashboard, _) = start_dashboard(&mut env, api).await?;
    let base = format!("http://{dashboard}");
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;
    let users = UserApi::new(api)?;

    // The user logs in; someone copies the cookie.
    let cookie = http_session_cookie(&base, EMAIL, PASSWORD).await?;
    let browser = CookieHolder::new(&base, &cookie)?;
    let copy = CookieHolder::new(&base, &cookie)?;
    let (status, _, html) = copy.get("/account").await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(EMAIL), "{html}");
    assert_eq!(users.status(&cookie, CURRENT).await?, 200);
    assert_eq!(users.status(&cookie, "/api/v2/submissions").await?, 200);

    // Log-out ends the session itself: the copy is refused by the dashboard and by the api.
    let (status, location) = browser.post_form("/account", "/logout", &[]).await?;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    assert_signed_out(&copy).await?;
    assert_eq!(users.status(&cookie, CURRENT).await?, 401);
    assert_eq!(users.status(&cookie, "/api/v2/submissions").await?, 401);

    // A password change ends every session of the user: the dashboard's and another device's.
    let cookie = http_session_cookie(&base, EMAIL, PASSWORD).await?;
    let browser = CookieHolder::new(&base, &cookie)?;
    let copy = CookieHolder::new(&base, &cookie)?;
    let other_device = users.session(EMAIL, PASSWORD, ip("203.0.113.5")).await?;
    let new_password = "a new and longer passphrase";
    // A wrong current password changes nothing.
    let (status, _) = browser
        .post_form(
            "/account",
            "/account/password",
            &[
                ("current_password", "not it at all"),
                ("new_password", new_password),
            ],
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(users.status(&cookie, CURRENT).await?, 200);
    let (status, location) = browser
        .post_form(
            "/account",
            "/account/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", new_password),
            ],
        )
        .await?;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    assert_signed_out(&copy).await?;
    assert_eq!(users.status(&cookie, CURRENT).await?, 401);
    assert_eq!(users.status(&other_device, CURRENT).await?, 401);
    // Only the new password opens a session now.
    let owner = ip("203.0.113.6");
    assert_eq!(users.log_in(EMAIL, PASSWORD, owner).await?.status, 401);
    assert_eq!(users.log_in(EMAIL, new_password, owner).await?.status, 201);
    http_session_cookie(&base, EMAIL, new_password).await?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_and_when_old() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("session_timeouts").await?;
    env.set("FP__API__SESSION_IDLE_TIMEOUT", "3s");
    env.set("FP__API__SESSION_ABSOLUTE_TIMEOUT", "6s");
    let api = start_api(&mut env).await?;
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;
    let users = UserApi::new(api)?;
    let browser = ip("198.51.100.30");

    // Idle: left alone longer than the idle timeout, the session has ended.
    let idle = users.session(EMAIL, PASSWORD, browser).await?;
    assert_eq!(users.status(&idle, CURRENT).await?, 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(users.status(&idle, CURRENT).await?, 401);

    // Absolute: used every half second (never idle), it still ends 6 s after the log-in.
    let busy = users.session(EMAIL, PASSWORD, browser).await?;
    // The session was made before its answer came: at most this long ago.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        assert_eq!(users.status(&busy, CURRENT).await?, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(6500).saturating_sub(started.elapsed())).await;
    assert_eq!(users.status(&busy, CURRENT).await?, 401);
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_and_end_their_sessions_and_a_superadmin_ends_a_users() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("session_list").await?;
    let api = start_api(&mut env).await?;
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    let user_id = create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;
    let superadmin = "ops@feedbackpulse.example";
    create_user(&env, superadmin, PASSWORD, None).await?;
    let users = UserApi::new(api)?;

    let laptop = users.session(EMAIL, PASSWORD, ip("198.51.100.1")).await?;
    let phone = users.session(EMAIL, PASSWORD, ip("198.51.100.2")).await?;
    let list = users
        .send(&laptop, Method::GET, "/api/v2/sessions", None)
        .await?;
    assert_eq!(list.status, 200, "{list:?}");
    let sessions = list.body["data"].as_array().context("data")?;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{sessions:?}");
    assert_eq!(current[0]["client_address"], "198.51.100.1");
    assert_eq!(current[0]["user_agent"], "fp-testkit at 198.51.100.1");
    for field in ["created_at", "last_used_at", "expires_at"] {
        assert!(current[0][field].is_string(), "{field}: {sessions:?}");
    }
    let other = sessions
        .iter()
        .find(|s| s["current"] == false)
        .context("the phone's session")?;
    assert_eq!(other["client_address"], "198.51.100.2");
    let phone_id = other["id"].as_str().context("id")?;

    // The laptop ends the phone's session.
    let ended = users
        .send(
            &laptop,
            Method::DELETE,
            &format!("/api/v2/sessions/{phone_id}"),
            None,
        )
        .await?;
    assert_eq!(ended.status, 204, "{ended:?}");
    assert_eq!(users.status(&phone, CURRENT).await?, 401);
    assert_eq!(users.status(&laptop, CURRENT).await?, 200);
    let list = users
        .send(&laptop, Method::GET, "/api/v2/sessions", None)
        .await?;
    assert_eq!(
        list.body["data"].as_array().map(Vec::len),
        Some(1),
        "{list:?}"
    );
    // Another user's session looks like none at all.
    let admin = users
        .session(superadmin, PASSWORD, ip("198.51.100.3"))
        .await?;
    let admin_id = users.send(&admin, Method::GET, CURRENT, None).await?.body["session"]["id"]
        .as_str()
        .context("the superadmin's session id")?
        .to_owned();
    let refused = users
        .send(
            &laptop,
            Method::DELETE,
            &format!("/api/v2/sessions/{admin_id}"),
            None,
        )
        .await?;
    assert_eq!(refused.status, 404, "{refused:?}");
    assert_eq!(users.status(&admin, CURRENT).await?, 200);

    // A superadmin ends all of a user's sessions; a tenant's key or session may not.
    let tablet = users.session(EMAIL, PASSWORD, ip("198.51.100.4")).await?;
    let path = format!("/api/v2/admin/users/{user_id}/sessions");
    let (status, body) = tenant.send(Method::DELETE, &path, None).await?;
    assert_eq!(status, 403, "{body}");
    let refused = users.send(&laptop, Method::DELETE, &path, None).await?;
    assert_eq!(refused.status, 403, "{refused:?}");
    let ended = users.send(&admin, Method::DELETE, &path, None).await?;
    assert_eq!((ended.status, &ended.body), (200, &json!({ "ended": 2 })));
    assert_eq!(users.status(&laptop, CURRENT).await?, 401);
    assert_eq!(users.status(&tablet, CURRENT).await?, 401);
    assert_eq!(users.status(&admin, CURRENT).await?, 200);
    let unknown = users
        .send(
            &admin,
            Method::DELETE,
            &format!("/api/v2/admin/users/{}/sessions", uuid::Uuid::now_v7()),
            None,
        )
        .await?;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_create_list_or_revoke_api_keys() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("session_keys").await?;
    let api = start_api(&mut env).await?;
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;
    let users = UserApi::new(api)?;
    let session = users.session(EMAIL, PASSWORD, ip("198.51.100.40")).await?;
    let (status, keys) = tenant.send(Method::GET, "/api/v2/api-keys", None).await?;
    assert_eq!(status, 200, "{keys}");
    let first_key = keys["data"][0]["id"].as_str().context("the first key")?;

    for (method, path, body) in [
        (Method::GET, "/api/v2/api-keys".to_owned(), None),
        (
            Method::POST,
            "/api/v2/api-keys".to_owned(),
            Some(json!({ "name": "stolen" })),
        ),
        (
            Method::DELETE,
            format!("/api/v2/api-keys/{first_key}"),
            None,
        ),
    ] {
        let refused = users
            .send(&session, method.clone(), &path, body.as_ref())
            .await?;
        assert_eq!(refused.status, 403, "{method} {path}: {refused:?}");
        assert_eq!(refused.body["error"]["code"], "forbidden");
        let message = refused.body["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("fpctl tenant create"), "{message}");
    }
    // Nothing was made or revoked: the tenant still holds its one live key, which still works.
    let (status, keys) = tenant.send(Method::GET, "/api/v2/api-keys", None).await?;
    assert_eq!(status, 200, "{keys}");
    let keys = keys["data"].as_array().context("data")?;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0]["revoked_at"].is_null(), "{keys:?}");
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_is_throttled_without_locking_out_the_owner_even_across_a_restart()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("login_throttle").await?;
    let (api, api_health) = start_api_with_health(&mut env).await?;
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;
    let users = UserApi::new(api)?;
    let guesser = ip("198.51.100.7");
    let owner = ip("203.0.113.9");

    // A few wrong passwords are merely wrong; then the guesser must wait.
    let mut refusal = None;
    for _ in 0..10 {
        let answer = users.log_in(EMAIL, "wrong password", guesser).await?;
        match answer.status {
            401 => continue,
            429 => {
                refusal = Some(answer);
                break;
            }
            _ => anyhow::bail!("a wrong password answered {answer:?}"),
        }
    }
    let refusal = refusal.context("ten wrong passwords in a row were never throttled")?;
    assert_eq!(refusal.body["error"]["code"], "throttled", "{refusal:?}");
    let mut wait = refusal.retry_after.context("a 429 without Retry-After")?;
    // Even the right password is refused from the guesser's address, before it is checked...
    let answer = users.log_in(EMAIL, PASSWORD, guesser).await?;
    assert_eq!(answer.status, 429, "{answer:?}");
    // ...while the owner, elsewhere, gets in.
    assert_eq!(users.log_in(EMAIL, PASSWORD, owner).await?.status, 201);

    // Each further failure doubles the wait; grow it to 8 s or more.
    while wait < 8 {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let answer = users.log_in(EMAIL, "wrong password", guesser).await?;
        assert_eq!(answer.status, 401, "after waiting {wait} s: {answer:?}");
        let answer = users.log_in(EMAIL, "wrong password", guesser).await?;
        assert_eq!(answer.status, 429, "{answer:?}");
        let next = answer.retry_after.context("a 429 without Retry-After")?;
        assert!(
            next > wait,
            "the wait did not grow: {wait} s, then {next} s"
        );
        wait = next;
    }

    // The count is in the database: a restarted api still refuses the guesser.
    let restart = Instant::now();
    env.kill("fp-api").await?;
    start_api_on(&mut env, api, api_health).await?;
    let answer = users.log_in(EMAIL, PASSWORD, guesser).await?;
    anyhow::ensure!(
        restart.elapsed() < Duration::from_secs(wait),
        "the restart took {:?}, longer than the {wait} s wait: nothing to tell",
        restart.elapsed()
    );
    assert_eq!(answer.status, 429, "after the restart: {answer:?}");
    assert_eq!(users.log_in(EMAIL, PASSWORD, owner).await?.status, 201);
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_throttles_a_guessing_browser_but_not_the_owners() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashboard_throttle").await?;
    let api = start_api(&mut env).await?;
    let (dashboard, _) = start_dashboard(&mut env, api).await?;
    let base = format!("http://{dashboard}");
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;

    // The guesser's browser connects from 127.0.0.1, the owner's from 127.0.0.2.
    let guesser = http_client("en", false)?;
    let html = guess_until_throttled(&guesser, &base, |_| None).await?;
    assert!(html.contains("Too many failed log-ins"), "{html}");
    let (status, _) = http_log_in(&guesser, &base, EMAIL, PASSWORD).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let owner = http_client_from(Some(ip("127.0.0.2")), "en", false)?;
    let (status, html) = http_log_in(&owner, &base, EMAIL, PASSWORD).await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    env.finish().await
}

/// Guesses wrong passwords through the dashboard at `base` until it answers 429, and returns that
/// page; fails if ten are not throttled. `forwarded_for` gives each guess the browser address a
/// proxy in front of the dashboard claims, if any.
async fn guess_until_throttled(
    client: &reqwest::Client,
    base: &str,
    forwarded_for: impl Fn(usize) -> Option<String>,
) -> anyhow::Result<String> {
    for guess in 0..10 {
        let (status, html) = match forwarded_for(guess) {
            Some(address) => {
                http_log_in_forwarded(client, base, EMAIL, "wrong password", &address).await?
            }
            None => http_log_in(client, base, EMAIL, "wrong password").await?,
        };
        match status {
            StatusCode::UNAUTHORIZED => continue,
            StatusCode::TOO_MANY_REQUESTS => return Ok(html),
            _ => anyhow::bail!("a wrong password answered {status}: {html}"),
        }
    }
    anyhow::bail!("ten wrong passwords in a row were never throttled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_dashboard_tells_browsers_apart_by_forwarded_for()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashboard_proxy").await?;
    let api = start_api(&mut env).await?;
    let (direct, _) = start_dashboard(&mut env, api).await?;
    env.set("FP__DASHBOARD__TRUSTED_PROXIES", "127.0.0.0/8");
    let (behind_proxy, _) = start_dashboard(&mut env, api).await?;
    let tenant = TenantApi::create(&env, api, "Acme").await?;
    create_user(&env, EMAIL, PASSWORD, Some(&tenant.tenant_id)).await?;
    // Every request comes from 127.0.0.1, as from one proxy.
    let client = http_client("en", false)?;

    // Behind the proxy: the guesser's browser is throttled, another browser still gets in.
    let base = format!("http://{behind_proxy}");
    guess_until_throttled(&client, &base, |_| Some("198.51.100.7".to_owned())).await?;
    let (status, _) =
        http_log_in_forwarded(&client, &base, EMAIL, PASSWORD, "198.51.100.7").await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, html) =
        http_log_in_forwarded(&client, &base, EMAIL, PASSWORD, "198.51.100.8").await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");

    // Reached directly, the header is the client's own word: a fresh address per guess is still
    // one client.
    // A client of its own: cookies do not tell the two dashboards' ports apart.
    let client = http_client("en", false)?;
    let base = format!("http://{direct}");
    guess_until_throttled(&client, &base, |guess| Some(format!("203.0.113.{guess}"))).await?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_https_public_url_brings_hsts_and_secure_cookies() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashboard_https").await?;
    // Neither page needs the api.
    let no_api = free_local_address()?;
    env.set("FP__DASHBOARD__PUBLIC_URL", "https://dashboard.example");
    let (over_https, _) = start_dashboard(&mut env, no_api).await?;
    env.set("FP__DASHBOARD__PUBLIC_URL", "http://127.0.0.1:8081");
    let (over_http, _) = start_dashboard(&mut env, no_api).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;

    for (dashboard, https) in [(over_https, true), (over_http, false)] {
        // What a proxy claims about the scheme changes nothing.
        for claimed in ["https", "http"] {
            for path in ["/login", "/static/app.css"] {
                let response = http
                    .get(format!("http://{dashboard}{path}"))
                    .header("x-forwarded-proto", claimed)
                    .send()
                    .await?;
                let hsts = response
                    .headers()
                    .get(header::STRICT_TRANSPORT_SECURITY)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let expected = https.then(|| "max-age=63072000".to_owned());
                assert_eq!(hsts, expected, "https={https} {path} (claimed {claimed})");
                for cookie in response.headers().get_all(header::SET_COOKIE) {
                    let cookie = cookie.to_str()?;
                    assert_eq!(
                        cookie.contains("; Secure"),
                        https,
                        "https={https}: {cookie}"
                    );
                }
            }
        }
        let response = http.get(format!("http://{dashboard}/login")).send().await?;
        assert!(
            response.headers().get(header::SET_COOKIE).is_some(),
            "the log-in form sets its nonce cookie"
        );
    }
    env.finish().await
}
