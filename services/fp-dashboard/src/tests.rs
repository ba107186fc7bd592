//! The routes, headers and error pages, through the real app with a database that cannot be
//! reached (every query fails, which is what the error-page tests need).

use actix_web::cookie::Cookie;
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};

use super::*;
use crate::session::{CsrfPurpose, LOGIN_NONCE_COOKIE, SESSION_COOKIE};

fn state() -> web::Data<AppState> {
    web::Data::new(AppState {
        // Port 9 (discard) is closed on test machines: connecting fails at once.
        pool: fp_store::pool("postgres://nobody@127.0.0.1:9/none", 1).expect("lazy pool"),
        api: ApiClient::new("http://127.0.0.1:9").expect("api client"),
        catalog: Catalog::load().expect("texts load"),
        signer: CsrfSigner::from_bytes(&[3u8; 32]),
        templates: Templates::load().expect("templates parse"),
        rng: SystemRandom::new(),
        trusted_proxies: Vec::new(),
        disable_failing_endpoints_after: std::time::Duration::from_secs(5 * 86_400),
    })
}

/// The app as served over plain http (`dashboard.public_url` is http).
fn over_http() -> web::Data<ServedOverHttps> {
    web::Data::new(ServedOverHttps(false))
}

fn header_of<'a, B>(response: &'a ServiceResponse<B>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

fn assert_security_headers<B>(response: &ServiceResponse<B>) {
    assert_eq!(
        header_of(response, "content-security-policy"),
        CONTENT_SECURITY_POLICY
    );
    assert_eq!(header_of(response, "x-content-type-options"), "nosniff");
}

async fn body_text<B: MessageBody>(response: ServiceResponse<B>) -> String {
    String::from_utf8(test::read_body(response).await.to_vec()).expect("utf-8 body")
}

/// A session cookie's value; whether it is live is the api's to say (unreachable here).
const SESSION: &str = "fps_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[actix_web::test]
async fn no_probes_on_the_public_port_stylesheet_and_home() {
    let app = test::init_service(app(state(), over_http())).await;

    // Probes and metrics are served on `dashboard.health_listen` only (fp_telemetry::health).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = test::call_service(&app, TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_security_headers(&response);
    }

    let response =
        test::call_service(&app, TestRequest::get().uri("/static/app.css").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header_of(&response, "content-type").starts_with("text/css"));
    assert_security_headers(&response);

    let response = test::call_service(&app, TestRequest::get().uri("/").to_request()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&response, "location"), "/webhooks/logs");
}

#[actix_web::test]
async fn the_log_in_form_has_labelled_fields_and_a_csrf_token() {
    let app = test::init_service(app(state(), over_http())).await;
    let response = test::call_service(&app, TestRequest::get().uri("/login").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(&response);
    let nonce_cookie = response
        .response()
        .cookies()
        .find(|cookie| cookie.name() == LOGIN_NONCE_COOKIE)
        .expect("nonce cookie")
        .into_owned();
    assert_eq!(nonce_cookie.http_only(), Some(true));
    let html = body_text(response).await;
    assert!(
        html.contains(r#"<label for="email">Email</label>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<label for="password">Password</label>"#),
        "{html}"
    );
    assert!(html.contains(r#"name="csrf_token""#), "{html}");
    assert!(
        html.contains("<title>Log in · FeedbackPulse</title>"),
        "{html}"
    );
}

#[actix_web::test]
async fn log_in_without_a_matching_token_shows_a_fresh_form() {
    let app = test::init_service(app(state(), over_http())).await;
    let request = TestRequest::post()
        .uri("/login")
        .set_form([
            ("email", "a@example.com"),
            ("password", "x"),
            ("csrf_token", "00"),
        ])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_security_headers(&response);
    let html = body_text(response).await;
    assert!(html.contains("The log-in form expired"), "{html}");
    assert!(html.contains(r#"value="a@example.com""#), "{html}");
}

#[actix_web::test]
async fn an_api_failure_during_log_in_is_a_readable_500_page() {
    let state = state();
    let app = test::init_service(app(state.clone(), over_http())).await;
    let nonce = "ab".repeat(32);
    let token = state.signer.csrf_token(CsrfPurpose::LogIn, &nonce);
    let request = TestRequest::post()
        .uri("/login")
        .cookie(Cookie::new(LOGIN_NONCE_COOKIE, nonce))
        .set_form([
            ("email", "a@example.com"),
            ("password", "x"),
            ("csrf_token", token.as_str()),
        ])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_security_headers(&response);
    assert!(header_of(&response, "content-type").starts_with("text/html"));
    let html = body_text(response).await;
    assert!(
        html.contains("FeedbackPulse could not complete this action"),
        "{html}"
    );
    assert!(!html.contains("127.0.0.1"), "no internals leak: {html}");
}

#[actix_web::test]
async fn the_log_page_needs_a_session_the_api_confirms() {
    let app = test::init_service(app(state(), over_http())).await;

    let response =
        test::call_service(&app, TestRequest::get().uri("/webhooks/logs").to_request()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&response, header::LOCATION.as_str()), "/login");

    // A cookie is checked with the api, which is down here: a readable error, not the page.
    let request = TestRequest::get()
        .uri("/webhooks/logs")
        .cookie(Cookie::new(SESSION_COOKIE, SESSION))
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_security_headers(&response);
    assert!(
        body_text(response)
            .await
            .contains("FeedbackPulse could not complete this action")
    );
}

#[actix_web::test]
async fn log_out_checks_its_token_before_ending_the_session_at_the_api() {
    let state = state();
    let app = test::init_service(app(state.clone(), over_http())).await;

    let request = TestRequest::post()
        .uri("/logout")
        .cookie(Cookie::new(SESSION_COOKIE, SESSION))
        .set_form([("csrf_token", "00")])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(body_text(response).await.contains("This form has expired"));

    // With its token the session is ended at the api; that cannot be done here, and the page
    // says so rather than pretend the session ended.
    let token = state.signer.csrf_token(CsrfPurpose::LogOut, SESSION);
    let request = TestRequest::post()
        .uri("/logout")
        .cookie(Cookie::new(SESSION_COOKIE, SESSION))
        .set_form([("csrf_token", token.as_str())])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // Without a session cookie there is nothing to end: the browser is sent to the log-in form.
    let request = TestRequest::post()
        .uri("/logout")
        .set_form([("csrf_token", "00")])
        .to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&response, "location"), "/login");
    let cleared = response
        .response()
        .cookies()
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .expect("removal cookie");
    assert_eq!(cleared.value(), "");
    assert_eq!(cleared.path(), Some("/"));
}

#[actix_web::test]
async fn unknown_pages_are_a_404_page() {
    let app = test::init_service(app(state(), over_http())).await;
    let response = test::call_service(&app, TestRequest::get().uri("/nope").to_request()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_security_headers(&response);
    assert!(body_text(response).await.contains("Page not found"));
}

#[actix_web::test]
async fn https_is_what_the_configuration_says_never_what_the_request_says() {
    for https in [true, false] {
        let app = test::init_service(app(state(), web::Data::new(ServedOverHttps(https)))).await;
        // A proxy's claim, either way, changes nothing.
        for proto in ["https", "http"] {
            let response = test::call_service(
                &app,
                TestRequest::get()
                    .uri("/login")
                    .insert_header(("x-forwarded-proto", proto))
                    .to_request(),
            )
            .await;
            assert_eq!(
                header_of(&response, "strict-transport-security"),
                if https { "max-age=63072000" } else { "" },
                "https={https}, x-forwarded-proto={proto}"
            );
            let set_cookie: Vec<String> = response
                .headers()
                .get_all(header::SET_COOKIE)
                .filter_map(|value| value.to_str().ok().map(str::to_owned))
                .collect();
            assert!(!set_cookie.is_empty(), "the form sets its nonce cookie");
            for cookie in &set_cookie {
                assert_eq!(cookie.contains("; Secure"), https, "{cookie}");
                assert!(
                    cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
                    "{cookie}"
                );
            }
        }
    }
}
