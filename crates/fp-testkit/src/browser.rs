//! A real headless Chromium driven over WebDriver, for the dashboard's browser tests.
//!
//! [`Browser::start`] runs Debian's `chromedriver` (own process group, free loopback port) and opens
//! a headless Chromium session with a fresh profile. The browser never downloads anything of its own
//! and never reaches the network beyond what the test points it at. Install both with
//! `deploy/local/ensure-browser.sh` (which `make test` and `.ci/run` call); `FP_CHROMIUM` and
//! `FP_CHROMEDRIVER` name other binaries.
//!
//! Every wait has a deadline, so a page that never shows what a test waits for fails the test with
//! what the page showed instead of hanging it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::environment::{binaries_dir, free_local_address};

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The viewport of every page unless a test resizes it.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone's viewport, for the narrow screenshots.
pub const NARROW: (u32, u32) = (390, 844);
/// How long an element, a path or a loaded document is waited for.
const WAIT: Duration = Duration::from_secs(10);
/// How long chromedriver may take to answer `/status` after it started.
const DRIVER_START: Duration = Duration::from_secs(20);
/// Any single WebDriver command; longer means chromedriver or Chromium hangs.
const COMMAND: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Flags that keep Chromium headless, root-compatible and off the network. Without the
/// background-networking ones it keeps dialling Google's services, which a closed network refuses.
const CHROMIUM_FLAGS: [&str; 13] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1280,900",
];

/// The browser's languages (its `Accept-Language`) unless a test names others: the dashboard picks
/// its language from them, so tests read English; and the time zone from their region, so with
/// none the tests read UTC.
pub const DEFAULT_LANGUAGES: &str = "en";

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    /// chromedriver, leader of a process group that also holds the Chromium it started.
    driver: Option<Child>,
    /// The session's scratch directory: Chromium's profile and chromedriver's log.
    dir: PathBuf,
    screenshots: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session (desktop size 1280x900)
    /// with the [`DEFAULT_LANGUAGES`].
    pub async fn start() -> anyhow::Result<Browser> {
        Browser::start_in(DEFAULT_LANGUAGES).await
    }

    /// [`Browser::start`] with `languages` (comma-separated, most preferred first: `de-DE,de`) as
    /// the browser's languages, sent as its `Accept-Language`.
    pub async fn start_in(languages: &str) -> anyhow::Result<Browser> {
        // reqwest (the readiness probe) needs a rustls provider even for plain HTTP.
        crate::install_crypto_provider();
        let chromium = browser_binary("FP_CHROMIUM", DEFAULT_CHROMIUM)?;
        let chromedriver = browser_binary("FP_CHROMEDRIVER", DEFAULT_CHROMEDRIVER)?;
        let target = binaries_dir()?;
        let screenshots = screenshots_dir()?;
        let dir = target.join("test-runs").join(format!(
            "browser-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("cannot create {}", profile.display()))?;

        // The free port can be taken again before chromedriver binds it: then try another.
        let mut last_error = None;
        for _ in 0..3 {
            match start_driver(&chromedriver, &dir).await {
                Ok((driver, port)) => {
                    let browser = Browser {
                        client: match connect(port, &chromium, &profile, languages).await {
                            Ok(client) => client,
                            Err(error) => {
                                let mut driver = driver;
                                kill_group(&mut driver);
                                let _ = std::fs::remove_dir_all(&profile);
                                let log = read_log(&dir);
                                return Err(error.context(format!(
                                    "no Chromium session could be opened; chromedriver's log:\n{log}"
                                )));
                            }
                        },
                        driver: Some(driver),
                        dir,
                        screenshots,
                    };
                    browser.resize(DESKTOP).await?;
                    return Ok(browser);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
    }

    /// Navigates to `url` and waits until the document is loaded. A JavaScript dialog that opens
    /// while loading is left open for [`Browser::alert_open`] to see.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        match within("navigation", self.client.goto(url)).await? {
            Ok(()) => {}
            Err(error) if error.is_unexpected_alert_open() => return Ok(()),
            Err(error) => return Err(error).with_context(|| format!("cannot open {url}")),
        }
        self.wait_loaded()
            .await
            .with_context(|| format!("{url} did not finish loading"))
    }

    /// Waits until the current document's `readyState` is `complete` (or a dialog blocks it).
    pub async fn wait_loaded(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match within(
                "readyState",
                self.client.execute("return document.readyState", vec![]),
            )
            .await?
            {
                Ok(state) if state == "complete" => return Ok(()),
                Ok(_) => {}
                Err(error) if error.is_unexpected_alert_open() => return Ok(()),
                Err(error) => return Err(error.into()),
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the document did not reach readyState complete within {WAIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves `target/screenshots/<name>-desktop.png` and `<name>-narrow.png` (390x844), restoring
    /// the desktop size. A page opened at a fragment (`#id`) is shot scrolled to its element.
    pub async fn screenshots(&self, name: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "screenshot name {name:?}: use letters, digits, - and _ (it becomes a file name)"
        );
        std::fs::create_dir_all(&self.screenshots)
            .with_context(|| format!("cannot create {}", self.screenshots.display()))?;
        let taken = async {
            for (size, suffix) in [(DESKTOP, "desktop"), (NARROW, "narrow")] {
                self.resize(size).await?;
                // A page opened at a fragment is shot there at each size, not where the other
                // size's scroll offset happens to fall.
                self.execute(
                    "var target = location.hash && \
                       document.getElementById(decodeURIComponent(location.hash.slice(1))); \
                     if (target) { target.scrollIntoView(); }",
                    vec![],
                )
                .await?;
                let png = within("screenshot", self.client.screenshot()).await??;
                let path = self.screenshots.join(format!("{name}-{suffix}.png"));
                std::fs::write(&path, png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            anyhow::Ok(())
        }
        .await;
        let restored = self.resize(DESKTOP).await;
        taken.and(restored)
    }

    /// Where [`Browser::screenshots`] writes: `<target>/screenshots`.
    pub fn screenshots_dir(&self) -> &Path {
        &self.screenshots
    }

    /// Sets the viewport (not the window, whose frame may differ) to `width` x `height`.
    pub async fn resize(&self, (width, height): (u32, u32)) -> anyhow::Result<()> {
        let before = self.viewport().await?;
        within("resize", self.client.set_window_size(width, height)).await??;
        let (inner_width, inner_height) = self.settled_viewport(before, (width, height)).await?;
        if (inner_width, inner_height) != (width, height) {
            // The window has a frame after all: grow the window by its thickness.
            let outer = (
                (2 * width).saturating_sub(inner_width),
                (2 * height).saturating_sub(inner_height),
            );
            within("resize", self.client.set_window_size(outer.0, outer.1)).await??;
            let now = self
                .settled_viewport((inner_width, inner_height), (width, height))
                .await?;
            anyhow::ensure!(
                now == (width, height),
                "the viewport is {now:?}, not {width}x{height}: Chromium refused the size"
            );
        }
        Ok(())
    }

    /// The viewport once a resize from `before` towards `wanted` has taken effect. The page may
    /// report its old size for a while after the window's new one was set (seen on a busy
    /// machine), and a frame measured from that stale size is wrong; so the viewport is read until
    /// it is `wanted`, or has left `before` and held still for 100 ms, for at most 2 s.
    async fn settled_viewport(
        &self,
        before: (u32, u32),
        wanted: (u32, u32),
    ) -> anyhow::Result<(u32, u32)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut last = self.viewport().await?;
        while last != wanted && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.viewport().await?;
            if now == last && now != before {
                break;
            }
            last = now;
        }
        Ok(last)
    }

    /// The viewport's width and height in CSS pixels.
    pub async fn viewport(&self) -> anyhow::Result<(u32, u32)> {
        let size = self
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await?;
        let dimension = |index: usize| -> anyhow::Result<u32> {
            size.get(index)
                .and_then(Value::as_u64)
                .and_then(|value| u32::try_from(value).ok())
                .with_context(|| format!("the viewport size is not two numbers: {size}"))
        };
        Ok((dimension(0)?, dimension(1)?))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page. WebDriver scripts
    /// are not subject to the page's Content-Security-Policy.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        within("script", self.client.execute(script, args))
            .await?
            .with_context(|| format!("script failed: {script}"))
    }

    /// Text content of the first element matching a CSS selector (as rendered: hidden text is
    /// left out), waiting up to 10 s for the element.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.wait_for(css).await?;
        Ok(within("text", element.text()).await??)
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> anyhow::Result<String> {
        self.text("body").await
    }

    /// The first element matching a CSS selector, waiting up to 10 s for it.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => Ok(element),
            Err(CmdError::WaitTimeout) => bail!(
                "no element matches {css:?} on {} within {WAIT:?}; the page says:\n{}",
                self.current_url().await.unwrap_or_default(),
                self.visible_text_for_errors().await
            ),
            Err(error) => Err(error.into()),
        }
    }

    /// How many elements match a CSS selector now (no waiting).
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        Ok(within("find", self.client.find_all(Locator::Css(css)))
            .await??
            .len())
    }

    /// Fills a form field found by its `<label>` text (proves fields are labelled) or by CSS
    /// selector, replacing what it held.
    pub async fn fill_labelled(&self, label: &str, value: &str) -> anyhow::Result<()> {
        let field = self.labelled_field(label).await?;
        within("clear", field.clear()).await??;
        within("typing", field.send_keys(value)).await??;
        Ok(())
    }

    /// Ticks (`checked`) or unticks the checkbox found by its `<label>` text (see
    /// [`Browser::labelled_field`]), by clicking it as a user would when it is not as asked.
    pub async fn set_checkbox(&self, label: &str, checked: bool) -> anyhow::Result<()> {
        let field = self.labelled_field(label).await?;
        let now = within("selected", field.is_selected()).await??;
        if now != checked {
            within("click", field.click()).await??;
        }
        let now = within("selected", field.is_selected()).await??;
        anyhow::ensure!(
            now == checked,
            "the checkbox {label:?} is {} after clicking it",
            if now { "ticked" } else { "unticked" }
        );
        Ok(())
    }

    /// Chooses the option with this `value` in the `<select>` found by its `<label>` text.
    pub async fn select_labelled(&self, label: &str, value: &str) -> anyhow::Result<()> {
        let field = self.labelled_field(label).await?;
        within("select", field.select_by_value(value))
            .await?
            .with_context(|| format!("{label:?} has no option {value:?}"))?;
        Ok(())
    }

    /// The form control a `<label>` with this text names (through `for` or by containing it); a
    /// label equal to the text wins over one that starts with it (`Email *`); otherwise `label`
    /// is taken as a CSS selector. Waits up to 10 s.
    pub async fn labelled_field(
        &self,
        label: &str,
    ) -> anyhow::Result<fantoccini::elements::Element> {
        let literal = xpath_literal(label);
        let label_paths = [
            format!("//label[normalize-space(.)={literal}]"),
            format!("//label[starts-with(normalize-space(.), {literal})]"),
        ];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for path in &label_paths {
                let labels = within("find", self.client.find_all(Locator::XPath(path))).await??;
                if let Some(found) = labels.first() {
                    return self.control_of(found, label).await;
                }
            }
            // Not a label's text: a CSS selector? (Invalid selectors just do not match.)
            if let Ok(Ok(fields)) =
                tokio::time::timeout(COMMAND, self.client.find_all(Locator::Css(label))).await
                && let Some(field) = fields.into_iter().next()
            {
                return Ok(field);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "no field labelled {label:?} (nor matching it as a CSS selector) on {} within \
                     {WAIT:?}; the page says:\n{}",
                    self.current_url().await.unwrap_or_default(),
                    self.visible_text_for_errors().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn control_of(
        &self,
        label: &fantoccini::elements::Element,
        text: &str,
    ) -> anyhow::Result<fantoccini::elements::Element> {
        if let Some(id) = within("attribute", label.attr("for")).await??
            && !id.is_empty()
        {
            let path = format!("//*[@id={}]", xpath_literal(&id));
            return within("find", self.client.find(Locator::XPath(&path)))
                .await?
                .with_context(|| {
                    format!("the label {text:?} is for #{id}, which is not on the page")
                });
        }
        within(
            "find",
            label.find(Locator::XPath(".//input | .//textarea | .//select")),
        )
        .await?
        .with_context(|| format!("the label {text:?} has no `for` and holds no form control"))
    }

    /// Clicks the button or link (or `<summary>`, or input button) with this visible text,
    /// waiting up to 10 s for one to be displayed, then for the page it leads to.
    pub async fn click_text(&self, text: &str) -> anyhow::Result<()> {
        let literal = xpath_literal(text);
        let path = format!(
            "//button[normalize-space(.)={literal}] | //a[normalize-space(.)={literal}] \
             | //summary[normalize-space(.)={literal}] \
             | //input[(@type='submit' or @type='button' or @type='reset') and @value={literal}]"
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let candidates = within("find", self.client.find_all(Locator::XPath(&path))).await??;
            for candidate in candidates {
                if within("displayed", candidate.is_displayed()).await?? {
                    // chromedriver waits for a navigation the click starts.
                    return match within("click", candidate.click()).await? {
                        Ok(()) => self.wait_loaded().await,
                        Err(error) if error.is_unexpected_alert_open() => Ok(()),
                        Err(error) => {
                            Err(error).with_context(|| format!("clicking {text:?} failed"))
                        }
                    };
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "no displayed button or link {text:?} on {} within {WAIT:?}; the page says:\n{}",
                    self.current_url().await.unwrap_or_default(),
                    self.visible_text_for_errors().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Clicks the button or link `text` that loads a new page, and returns once that page has
    /// loaded. The old document is marked first: chromedriver may return from a form's submit
    /// before the navigation starts, when the old page still reads as loaded.
    pub async fn click_to_load(&self, text: &str) -> anyhow::Result<()> {
        self.execute("window.fpOldPage = true; return null;", vec![])
            .await?;
        self.click_text(text).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let old = self
                .execute(
                    "return window.fpOldPage === true || document.readyState !== 'complete';",
                    vec![],
                )
                .await?;
            if old == Value::Bool(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("clicking {text:?} loaded no new page within {WAIT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether any JavaScript dialog (alert) is open — the XSS probe.
    pub async fn alert_open(&self) -> anyhow::Result<bool> {
        match within("alert", self.client.get_alert_text()).await? {
            Ok(_) => Ok(true),
            Err(error) if error.is_no_such_alert() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// The text of the open JavaScript dialog, if any.
    pub async fn alert_text(&self) -> anyhow::Result<Option<String>> {
        match within("alert", self.client.get_alert_text()).await? {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.is_no_such_alert() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Dismisses the open JavaScript dialog, if any.
    pub async fn dismiss_alert(&self) -> anyhow::Result<()> {
        match within("alert", self.client.dismiss_alert()).await? {
            Ok(()) => Ok(()),
            Err(error) if error.is_no_such_alert() => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Checks that no script ran or can run on the current page: no dialog is open, the page has
    /// no `<script>` element and no element carries an `on...` event-handler attribute. (The
    /// dashboard's pages have no script of their own.)
    pub async fn assert_no_script_ran(&self) -> anyhow::Result<()> {
        if let Some(text) = self.alert_text().await? {
            bail!(
                "a JavaScript dialog is open on {} (it says {text:?}): injected script ran",
                self.current_url().await.unwrap_or_default()
            );
        }
        let scripts = self.count("script").await?;
        anyhow::ensure!(
            scripts == 0,
            "{} has {scripts} <script> element(s)",
            self.current_url().await?
        );
        let handlers = self
            .execute(
                "return Array.from(document.querySelectorAll('*')).filter(function (e) { \
                   return Array.from(e.attributes).some(function (a) { \
                     return a.name.toLowerCase().indexOf('on') === 0; }); \
                 }).map(function (e) { return e.outerHTML.slice(0, 200); });",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            handlers.as_array().is_some_and(Vec::is_empty),
            "elements with event-handler attributes on {}: {handlers}",
            self.current_url().await?
        );
        Ok(())
    }

    /// Whether `text` is in the page's visible text once every `<details>` is opened.
    pub async fn shows_text(&self, text: &str) -> anyhow::Result<bool> {
        // Folded details hide their text from WebDriver's rendered text.
        self.execute(
            "document.querySelectorAll('details').forEach(function (d) { d.open = true; });",
            vec![],
        )
        .await?;
        Ok(self.page_text().await?.contains(text))
    }

    /// Checks that `hostile` (markup such as `<script>alert(1)</script>`) shows on the current
    /// page as literal text and did nothing: it is in the visible text (with every `<details>`
    /// opened), and [`Browser::assert_no_script_ran`] holds.
    pub async fn assert_inert_text(&self, hostile: &str) -> anyhow::Result<()> {
        self.assert_no_script_ran().await?;
        if !self.shows_text(hostile).await? {
            bail!(
                "{hostile:?} is not shown as text on {}; the page says:\n{}",
                self.current_url().await?,
                self.page_text().await?
            );
        }
        self.assert_no_script_ran().await
    }

    /// The absolute `href` of every link matching a CSS selector (no waiting).
    pub async fn links(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let mut hrefs = Vec::new();
        for link in within("find", self.client.find_all(Locator::Css(css))).await?? {
            // The property, unlike the attribute, is resolved against the page's URL.
            if let Some(href) = within("href", link.prop("href")).await?? {
                hrefs.push(href);
            }
        }
        Ok(hrefs)
    }

    /// The current URL.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(within("url", self.client.current_url()).await??.to_string())
    }

    /// The path of the current URL (`/webhooks/logs`).
    pub async fn current_path(&self) -> anyhow::Result<String> {
        Ok(within("url", self.client.current_url())
            .await??
            .path()
            .to_owned())
    }

    /// Waits up to 10 s until the current path is `path`.
    pub async fn wait_for_path(&self, path: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.current_path().await?;
            if now == path {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the browser is on {now}, not {path}, after {WAIT:?}; the page says:\n{}",
                    self.visible_text_for_errors().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The value of the browser's cookie `name` for the current page, if it has one (HttpOnly
    /// ones too: WebDriver sees the whole jar).
    pub async fn cookie(&self, name: &str) -> anyhow::Result<Option<String>> {
        let cookies = within("cookies", self.client.get_all_cookies()).await??;
        Ok(cookies
            .into_iter()
            .find(|cookie| cookie.name() == name)
            .map(|cookie| cookie.value().to_owned()))
    }

    /// The page's text for an error message, or why it could not be read.
    async fn visible_text_for_errors(&self) -> String {
        match tokio::time::timeout(
            Duration::from_secs(5),
            self.client.find(Locator::Css("body")),
        )
        .await
        {
            Ok(Ok(body)) => match tokio::time::timeout(Duration::from_secs(5), body.text()).await {
                Ok(Ok(text)) => text,
                Ok(Err(error)) => format!("(unreadable: {error})"),
                Err(_) => "(unreadable: timed out)".to_owned(),
            },
            Ok(Err(error)) => format!("(unreadable: {error})"),
            Err(_) => "(unreadable: timed out)".to_owned(),
        }
    }

    /// Ends the session (Chromium exits) and chromedriver; removes the scratch directory (which
    /// is kept, less the profile, when the session did not end cleanly: chromedriver's log).
    pub async fn close(mut self) -> anyhow::Result<()> {
        let closed = within("closing the session", self.client.clone().close()).await;
        if let Some(mut driver) = self.driver.take() {
            kill_group(&mut driver);
            // Reaped so no zombie is left; it was just killed, so this is quick.
            let _ = tokio::time::timeout(Duration::from_secs(5), driver.wait()).await;
        }
        match closed {
            Ok(Ok(())) => {
                let _ = std::fs::remove_dir_all(&self.dir);
                Ok(())
            }
            failed => {
                let _ = std::fs::remove_dir_all(self.dir.join("profile"));
                let log = self.dir.join("chromedriver.log");
                failed?
                    .with_context(|| format!("closing the session failed; see {}", log.display()))
            }
        }
    }
}

impl Drop for Browser {
    /// A test that failed before `close` still leaves no chromedriver or Chromium behind.
    fn drop(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            kill_group(&mut driver);
            let _ = std::fs::remove_dir_all(self.dir.join("profile"));
        }
    }
}

/// Logs in through the dashboard's form at `dashboard` (base URL) and waits for the redirect.
pub async fn log_in(
    browser: &Browser,
    dashboard: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<()> {
    let dashboard = dashboard.trim_end_matches('/');
    browser.goto(&format!("{dashboard}/login")).await?;
    browser.fill_labelled("Email", email).await?;
    browser.fill_labelled("Password", password).await?;
    browser.click_text("Log in").await?;
    // A good log-in is answered with a redirect away from the form; a refused one with the form.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let path = browser.current_path().await?;
        if path != "/login" {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "log-in as {email} failed: still on /login after {WAIT:?}; the page says:\n{}",
                browser.visible_text_for_errors().await
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `<target>/screenshots`, beside `target/debug` where the test binaries are.
pub fn screenshots_dir() -> anyhow::Result<PathBuf> {
    let binaries = binaries_dir()?;
    let target = binaries
        .parent()
        .context("the binaries directory has no parent")?;
    Ok(target.join("screenshots"))
}

/// The binary named by `variable`, else `default`; an error saying how to install it if absent.
fn browser_binary(variable: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if !path.is_file() {
        bail!(
            "{} is missing: the browser tests need Debian's chromium and chromium-driver; run \
             deploy/local/ensure-browser.sh or make test (or set {variable} to another binary)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts chromedriver on a free loopback port and waits until it says it is ready.
async fn start_driver(chromedriver: &Path, dir: &Path) -> anyhow::Result<(Child, u16)> {
    let port = free_local_address()?.port();
    let log_path = dir.join("chromedriver.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        // Loopback only (its default too, said here so it stays so).
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group, so Chromium and its helpers can be ended with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", chromedriver.display()))?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let status_url = format!("http://127.0.0.1:{port}/status");
    let deadline = tokio::time::Instant::now() + DRIVER_START;
    loop {
        if let Ok(response) = http.get(&status_url).send().await
            && let Ok(body) = response.text().await
            && let Ok(status) = serde_json::from_str::<Value>(&body)
            && status["value"]["ready"] == true
        {
            return Ok((driver, port));
        }
        let exited = driver.try_wait().ok().flatten();
        if exited.is_some() || tokio::time::Instant::now() > deadline {
            kill_group(&mut driver);
            bail!(
                "chromedriver did not become ready on port {port} ({exited:?}); its log:\n{}",
                read_log(dir)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Opens a WebDriver session for a headless Chromium with a fresh profile.
async fn connect(
    port: u16,
    chromium: &Path,
    profile: &Path,
    languages: &str,
) -> anyhow::Result<Client> {
    let mut args: Vec<String> = CHROMIUM_FLAGS
        .iter()
        .map(|flag| (*flag).to_owned())
        .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let first_language = languages.split(',').next().unwrap_or(languages);
    args.push(format!("--lang={first_language}"));
    let capabilities = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        // Leave dialogs open: `alert_open` must see one that injected script opened, rather than
        // chromedriver dismissing it on the next command.
        "unhandledPromptBehavior": "ignore",
        "timeouts": {"pageLoad": 30_000, "script": 10_000, "implicit": 0},
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": args,
            "prefs": {"intl.accept_languages": languages},
        },
    });
    let Value::Object(capabilities) = capabilities else {
        bail!("capabilities must be a JSON object");
    };
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities);
    let session = tokio::time::timeout(
        COMMAND,
        builder.connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .context("Chromium did not start within 60 s")?;
    session.context("chromedriver refused the new session")
}

/// Ends chromedriver's process group: chromedriver, and the Chromium it started if it is still
/// there. Sent by pid to the group this harness created, nothing else.
fn kill_group(driver: &mut Child) {
    if let Some(pid) = driver.id() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = driver.start_kill();
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default()
}

/// Runs one WebDriver command with a deadline.
async fn within<T>(what: &str, command: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(COMMAND, command)
        .await
        .with_context(|| format!("WebDriver {what} took longer than {COMMAND:?}"))
}

/// `text` as an XPath 1.0 string literal (which has no escapes: quotes are joined with concat).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        return format!("'{text}'");
    }
    if !text.contains('"') {
        return format!("\"{text}\"");
    }
    let parts: Vec<String> = text.split('\'').map(|part| format!("'{part}'")).collect();
    format!("concat({})", parts.join(", \"'\", "))
}

#[cfg(test)]
mod tests {
    use super::xpath_literal;

    #[test]
    fn xpath_literals_quote_any_text() {
        assert_eq!(xpath_literal("Log in"), "'Log in'");
        assert_eq!(xpath_literal("it's"), "\"it's\"");
        assert_eq!(
            xpath_literal(r#"say "it's""#),
            r#"concat('say "it', "'", 's"')"#
        );
    }
}
