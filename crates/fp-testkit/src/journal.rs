//! The fault tests' load and verdict: submissions through the api ([`LoadClient`]), then what the
//! tenant's endpoint saw (a journal of requests) against what
//! the tenant's log says. Every accepted submission delivered and logged with a 200; every request
//! logged (no fewer rows than requests, no more answered rows than requests); a second request of
//! a delivery only after a failed or interrupted attempt; no attempt id twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

use serde_json::Value;

use crate::examples;
use crate::pipeline::{TenantApi, is_interrupted};
use crate::receiver::ReceivedRequest;

/// The load's view of the api: raw requests, so that a 503, a refused connection or a slow answer
/// is counted rather than fatal.
#[derive(Clone)]
pub struct LoadClient {
    submissions_url: String,
    key: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl LoadClient {
    /// Submissions as `tenant`, each given up (as "no answer") after `timeout`.
    pub fn of(tenant: &TenantApi, timeout: Duration) -> Self {
        LoadClient {
            submissions_url: format!("{}/api/v2/submissions", tenant.base),
            key: tenant.key.clone(),
            http: tenant.http.clone(),
            timeout,
        }
    }

    /// The id of the submission the api accepted, or what happened instead: `no answer`, the
    /// status, or what was wrong with the 201.
    pub async fn submit(&self, text_feedback: &str) -> Result<i64, String> {
        let body = serde_json::json!({
            "campaign_id": 1,
            "star_rating": 4,
            "text_feedback": text_feedback,
        });
        let response = self
            .http
            .post(&self.submissions_url)
            .bearer_auth(&self.key)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|_| "no answer".to_owned())?;
        let status = response.status().as_u16();
        if status != 201 {
            return Err(status.to_string());
        }
        // The timeout covers the body too: a 201 whose body is still coming when it ends was not
        // answered in time, like one whose headers never came.
        let text = response.text().await.map_err(|error| {
            if error.is_timeout() {
                "no answer".to_owned()
            } else {
                "201 without a readable body".to_owned()
            }
        })?;
        let created: Value =
            serde_json::from_str(&text).map_err(|_| "201 without a JSON body".to_owned())?;
        created["id"]
            .as_i64()
            .ok_or_else(|| "201 without an id".to_owned())
    }
}

/// One request the endpoint saw.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `x-feedbackpulse-delivery`, empty if the request had none.
    pub delivery: String,
    /// The submission of a `submission.created` event.
    pub submission: Option<i64>,
    /// Answered with a 2xx within the dispatcher's timeout (a hanging answer comes after it has
    /// given up). Whether the dispatcher lived to read it, only the log can tell.
    pub succeeded: bool,
    pub at: Instant,
}

impl SeenRequest {
    pub fn of(request: &ReceivedRequest, succeeded: bool) -> Self {
        SeenRequest {
            delivery: request
                .header("x-feedbackpulse-delivery")
                .unwrap_or_default()
                .to_owned(),
            submission: request.created_submission(),
            succeeded,
            at: Instant::now(),
        }
    }
}

/// What the endpoint and the log say about a run's deliveries.
#[derive(Debug, Default)]
pub struct Findings {
    /// Accepted submissions delivered with a 2xx and logged with a 200.
    pub delivered: usize,
    /// Requests the endpoint saw.
    pub requests: usize,
    pub log_entries: usize,
    pub interrupted: usize,
    /// Deliveries the endpoint saw more than once.
    pub duplicates: usize,
    /// Every broken promise, with examples; empty when the run kept them all.
    pub failures: Vec<String>,
}

fn answered_2xx(entry: &Value) -> bool {
    entry["response_code"]
        .as_i64()
        .is_some_and(|code| (200..300).contains(&code))
}

/// The journal against the log entries (see the module's documentation).
pub fn examine(accepted: &BTreeSet<i64>, journal: &[SeenRequest], entries: &[Value]) -> Findings {
    let mut rows: HashMap<&str, Vec<&Value>> = HashMap::new();
    for entry in entries {
        rows.entry(entry["delivery_id"].as_str().unwrap_or_default())
            .or_default()
            .push(entry);
    }
    let mut requests: BTreeMap<&str, usize> = BTreeMap::new();
    let mut succeeded_by_submission: HashMap<i64, Vec<&str>> = HashMap::new();
    for seen in journal {
        *requests.entry(seen.delivery.as_str()).or_default() += 1;
        if let (true, Some(submission)) = (seen.succeeded, seen.submission) {
            succeeded_by_submission
                .entry(submission)
                .or_default()
                .push(seen.delivery.as_str());
        }
    }
    let logged_200 = |delivery: &str| {
        rows.get(delivery)
            .is_some_and(|rows| rows.iter().any(|row| row["response_code"] == 200))
    };
    let undelivered: Vec<i64> = accepted
        .iter()
        .copied()
        .filter(|submission| {
            !succeeded_by_submission
                .get(submission)
                .is_some_and(|deliveries| deliveries.iter().any(|delivery| logged_200(delivery)))
        })
        .collect();
    let mut findings = Findings {
        delivered: accepted.len() - undelivered.len(),
        requests: journal.len(),
        log_entries: entries.len(),
        interrupted: entries.iter().filter(|entry| is_interrupted(entry)).count(),
        ..Findings::default()
    };
    if !undelivered.is_empty() {
        findings.failures.push(format!(
            "{} of {} accepted submissions not delivered with a 2xx and logged with a 200, e.g. {}",
            undelivered.len(),
            accepted.len(),
            examples(&undelivered)
        ));
    }
    let mut unlogged = Vec::new();
    let mut logged_twice = Vec::new();
    let mut unexplained = Vec::new();
    for (delivery, &count) in &requests {
        let logged = rows.get(delivery).map(Vec::as_slice).unwrap_or_default();
        if count > logged.len() {
            unlogged.push(format!(
                "{delivery}: {count} requests, {} rows",
                logged.len()
            ));
        }
        let answered = logged
            .iter()
            .filter(|row| row["response_code"].is_i64())
            .count();
        if answered > count {
            logged_twice.push(format!(
                "{delivery}: {count} requests, {answered} answered rows"
            ));
        }
        if count > 1 {
            findings.duplicates += 1;
            // A second request is fair only after an attempt that failed or was cut off.
            let explained = logged
                .iter()
                .any(|row| is_interrupted(row) || !answered_2xx(row));
            if !explained {
                unexplained.push(format!("{delivery}: {count} requests"));
            }
        }
    }
    let mut ids = HashMap::new();
    for entry in entries {
        *ids.entry(entry["id"].to_string()).or_insert(0usize) += 1;
    }
    let repeated_ids: Vec<&String> = ids
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(id, _)| id)
        .collect();
    for (what, list) in [
        (
            "deliveries reached the receiver more often than the log shows",
            &unlogged,
        ),
        (
            "deliveries have more answered attempts logged than requests",
            &logged_twice,
        ),
        (
            "deliveries were sent again with no failed or interrupted attempt logged",
            &unexplained,
        ),
    ] {
        if !list.is_empty() {
            findings
                .failures
                .push(format!("{} {what}, e.g. {}", list.len(), examples(list)));
        }
    }
    if !repeated_ids.is_empty() {
        findings.failures.push(format!(
            "{} attempt ids appear twice in the log, e.g. {}",
            repeated_ids.len(),
            examples(&repeated_ids)
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn seen(delivery: &str, submission: i64) -> SeenRequest {
        SeenRequest {
            delivery: delivery.to_owned(),
            submission: Some(submission),
            succeeded: true,
            at: Instant::now(),
        }
    }

    fn row(id: &str, delivery: &str, code: Option<i64>) -> Value {
        match code {
            Some(code) => json!({"id": id, "delivery_id": delivery, "response_code": code}),
            None => json!({"id": id, "delivery_id": delivery, "error": {"kind": "interrupted"}}),
        }
    }

    #[test]
    fn a_clean_run_has_no_failures() {
        let accepted = BTreeSet::from([1, 2]);
        let journal = [seen("d1", 1), seen("d2", 2)];
        let entries = [row("a1", "d1", Some(200)), row("a2", "d2", Some(200))];
        let findings = examine(&accepted, &journal, &entries);
        assert!(findings.failures.is_empty(), "{:?}", findings.failures);
        assert_eq!(findings.delivered, 2);
    }

    #[test]
    fn a_repeat_is_fair_only_after_a_failed_or_interrupted_attempt() {
        let accepted = BTreeSet::from([1]);
        let journal = [seen("d1", 1), seen("d1", 1)];
        let unexplained = [row("a1", "d1", Some(200)), row("a2", "d1", Some(200))];
        let findings = examine(&accepted, &journal, &unexplained);
        assert_eq!(findings.duplicates, 1);
        assert!(
            findings.failures[0].contains("sent again with no failed or interrupted attempt"),
            "{:?}",
            findings.failures
        );
        let explained = [row("a1", "d1", None), row("a2", "d1", Some(200))];
        assert!(examine(&accepted, &journal, &explained).failures.is_empty());
    }

    #[test]
    fn lost_submissions_unlogged_requests_and_repeated_rows_are_failures() {
        let accepted = BTreeSet::from([1, 2]);
        let journal = [seen("d1", 1), seen("d1", 1)];
        let entries = [row("a1", "d1", None), row("a1", "d1", Some(200))];
        let failures = examine(&accepted, &journal, &entries).failures;
        assert!(failures[0].starts_with("1 of 2 accepted submissions not delivered"));
        assert!(
            failures
                .iter()
                .any(|f| f.contains("attempt ids appear twice")),
            "{failures:?}"
        );
        let unlogged = examine(
            &BTreeSet::from([1]),
            &journal,
            &[row("a1", "d1", Some(200))],
        );
        assert!(
            unlogged
                .failures
                .iter()
                .any(|f| f.contains("more often than the log shows")),
            "{:?}",
            unlogged.failures
        );
    }
}
