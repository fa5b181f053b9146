//! What the host does around every call a component makes, chained
//! (`http://<id>.spin.internal`) or outbound: a per-target timeout, bounded
//! retries with exponential backoff and full jitter for idempotent methods,
//! and a circuit breaker per target.
//!
//! A target is a callee component or an outbound `host:port`. Its breaker
//! opens after `breaker_failures` failures in a row (no answer in time, a
//! refused connection, or a `500`, `502`, `503` or `504`); while open, calls
//! are answered at once with `503` and `Retry-After` without touching the
//! target; after `breaker_open` one call goes through as a probe, and its
//! outcome closes the breaker or opens it again. Breakers belong to one app,
//! so one tenant's failing dependency never trips another's calls.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::full_body;
use crate::metrics::{CallOutcome, ComponentLabels, Metrics};

/// Request bodies of idempotent calls up to this size are kept so the call
/// can be retried; a larger body is streamed and the call is not retried.
const REPLAY_LIMIT: usize = 64 << 10;
/// Breakers kept per app before closed, healthy ones are forgotten.
const MAX_BREAKERS: usize = 1024;

/// How calls to one target are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Deadline of one attempt (never past the caller's own deadline);
    /// `None`: the caller's deadline only.
    pub timeout: Option<Duration>,
    /// Extra attempts for idempotent methods after a failure.
    pub retries: u32,
    /// The first retry waits up to this long; each further one doubles it.
    pub backoff: Duration,
    /// Failures in a row that open the breaker; 0 disables the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before it lets a probe through.
    pub breaker_open: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: None,
            retries: 2,
            backoff: Duration::from_millis(25),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(5),
        }
    }
}

/// An app's call policies and breakers.
#[derive(Default)]
pub struct Calls {
    default: CallPolicy,
    /// By target key (see [`target_key`]).
    targets: HashMap<String, CallPolicy>,
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Where attempts and breaker changes are counted; `None` in unit tests.
    metrics: Option<(Arc<Metrics>, ComponentLabels)>,
}

/// Sends one attempt of a call, until the given deadline.
pub type Send<'a> = dyn Fn(
        Request<WasiBody>,
        Instant,
    )
        -> Pin<Box<dyn Future<Output = Result<Response<WasiBody>, HttpError>> + std::marker::Send>>
    + std::marker::Send
    + Sync
    + 'a;

impl Calls {
    pub fn new(default: CallPolicy, targets: HashMap<String, CallPolicy>) -> Self {
        Self {
            default,
            targets,
            breakers: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// Counts calls in `metrics`, for the app `app` names (its `component`
    /// label is replaced by the caller's).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>, app: ComponentLabels) -> Self {
        self.metrics = Some((metrics, app));
        self
    }

    fn count(&self, caller: &str, key: &str, outcome: CallOutcome) {
        if let Some((metrics, app)) = &self.metrics {
            let labels = ComponentLabels {
                component: caller.to_owned(),
                ..app.clone()
            };
            metrics.called(&labels, key, outcome);
        }
    }

    fn changed(&self, key: &str, change: Change) {
        change.log(key);
        if let Some((metrics, app)) = &self.metrics {
            let open = matches!(change, Change::Opened { .. });
            metrics.circuit(&app.tenant, &app.app, key, open);
        }
    }

    fn policy(&self, key: &str) -> CallPolicy {
        self.targets.get(key).copied().unwrap_or(self.default)
    }

    fn breaker(&self, key: &str) -> Arc<Breaker> {
        let mut breakers = match self.breakers.lock() {
            Ok(breakers) => breakers,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(breaker) = breakers.get(key) {
            return breaker.clone();
        }
        if breakers.len() >= MAX_BREAKERS {
            breakers.retain(|_, b| !b.is_healthy());
        }
        let breaker = Arc::new(Breaker::default());
        breakers.insert(key.to_owned(), breaker.clone());
        breaker
    }

    /// Makes a call to `key` with its policy: `send` is called once per
    /// attempt. An open breaker answers `503` itself.
    pub async fn call(
        &self,
        caller: &str,
        key: &str,
        request: Request<WasiBody>,
        deadline: Instant,
        send: &Send<'_>,
    ) -> Result<Response<WasiBody>, HttpError> {
        let policy = self.policy(key);
        let breaker = self.breaker(key);
        let (parts, body) = request.into_parts();
        let (mut body, replay) = if policy.retries > 0 && is_idempotent(&parts.method) {
            match keep_for_replay(body, deadline).await? {
                Kept::Whole(bytes) => (Some(full_body(bytes.clone())), Some(bytes)),
                Kept::Streaming(body) => (Some(body), None),
            }
        } else {
            (Some(body), None)
        };
        let mut attempt = 0;
        loop {
            let probe = match breaker.admit(&policy, Instant::now()) {
                Ok(probe) => probe,
                Err(wait) => {
                    self.count(caller, key, CallOutcome::Open);
                    return Ok(open_circuit(key, wait));
                }
            };
            let mut permit = Permit {
                breaker: &breaker,
                probe,
                settled: false,
            };
            let body = match (body.take(), &replay) {
                (Some(body), _) => body,
                (None, Some(bytes)) => full_body(bytes.clone()),
                // Unreachable: without a replay the loop ends after one attempt.
                (None, None) => return Err(HttpError::InternalError(None)),
            };
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            let attempt_deadline = policy
                .timeout
                .map_or(deadline, |t| (Instant::now() + t).min(deadline));
            let result = match tokio::time::timeout_at(
                attempt_deadline.into(),
                send(request, attempt_deadline),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(HttpError::HttpResponseTimeout),
            };
            let failed = match &result {
                Ok(response) => is_failure(response.status()),
                Err(_) => true,
            };
            let outcome = if failed {
                CallOutcome::Failed
            } else {
                CallOutcome::Ok
            };
            self.count(caller, key, outcome);
            if let Some(change) = permit.settle(!failed, &policy) {
                self.changed(key, change);
            }
            attempt += 1;
            if !failed || attempt > policy.retries || replay.is_none() {
                return result;
            }
            let pause = backoff(policy.backoff, attempt);
            if Instant::now() + pause >= deadline {
                return result;
            }
            tracing::debug!(target_key = key, attempt, "call failed; retrying");
            drop(result);
            tokio::time::sleep(pause).await;
        }
    }
}

/// The key of a call's target: the callee component for a chained call,
/// else `host:port` (the scheme's port when none is given).
pub fn target_key(uri: &http::Uri, component: Option<&str>) -> String {
    if let Some(component) = component {
        return format!(
            "{}{}",
            component.to_ascii_lowercase(),
            super::CHAINING_SUFFIX
        );
    }
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    format!("{host}:{port}")
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Answers that say the target is failing, rather than that the request is.
fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Full jitter: a uniform pause in `[0, base * 2^(attempt-1)]`.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    ceiling.mul_f64(fastrand::f64())
}

/// What the guest gets while the target's breaker is open.
fn open_circuit(key: &str, wait: Duration) -> Response<WasiBody> {
    let secs = crate::triggers::http::errors::retry_after_secs(wait);
    let body = serde_json::json!({"error": {
        "code": "unavailable",
        "message": format!("{key} is failing; calls to it are paused (circuit open)"),
    }});
    let mut response = Response::new(full_body(body.to_string()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

enum Kept {
    Whole(Bytes),
    Streaming(WasiBody),
}

/// Reads a request body up to [`REPLAY_LIMIT`] so it can be sent again; a
/// larger one comes back as a body that yields what was read, then the rest.
async fn keep_for_replay(mut body: WasiBody, deadline: Instant) -> Result<Kept, HttpError> {
    let mut kept = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(frame) => frame,
            Err(_) => return Err(HttpError::ConnectionWriteTimeout),
        };
        let Some(frame) = frame else {
            return Ok(Kept::Whole(kept.freeze()));
        };
        let frame = frame?;
        match frame.into_data() {
            Ok(data) if kept.len() + data.len() <= REPLAY_LIMIT => kept.extend_from_slice(&data),
            Ok(data) => {
                let head = [Ok(kept.freeze()), Ok(data)];
                return Ok(Kept::Streaming(chain(head, body)));
            }
            // Trailers: nothing follows them.
            Err(trailers) => {
                let head = http_body::Frame::data(kept.freeze());
                let frames = [Ok(head), Ok(trailers)];
                return Ok(Kept::Streaming(
                    http_body_util::StreamBody::new(futures::stream::iter(frames)).boxed_unsync(),
                ));
            }
        }
    }
}

fn chain(head: [Result<Bytes, HttpError>; 2], rest: WasiBody) -> WasiBody {
    use futures::StreamExt as _;
    let head = futures::stream::iter(head).map(|data| data.map(http_body::Frame::data));
    let rest = http_body_util::BodyStream::new(rest);
    http_body_util::StreamBody::new(head.chain(rest)).boxed_unsync()
}

/// One target's breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        failures: u32,
    },
    /// One probe is out; everyone else waits for its outcome.
    Probing,
}

impl Default for State {
    fn default() -> Self {
        State::Closed { failures: 0 }
    }
}

/// A change of a breaker's state worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Opened { failures: u32, for_: Duration },
    Closed,
}

impl Change {
    fn log(self, key: &str) {
        match self {
            Change::Opened { failures, for_ } => tracing::warn!(
                target_key = key,
                failures,
                open_ms = for_.as_millis() as u64,
                "circuit opened: calls to {key} are answered 503 until a probe succeeds"
            ),
            Change::Closed => {
                tracing::info!(target_key = key, "circuit closed: {key} answers again")
            }
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn is_healthy(&self) -> bool {
        *self.lock() == State::Closed { failures: 0 }
    }

    /// Whether a call may go now: `Ok(true)` for the probe of an open
    /// breaker, `Err(wait)` while it refuses calls.
    fn admit(&self, policy: &CallPolicy, now: Instant) -> Result<bool, Duration> {
        if policy.breaker_failures == 0 {
            return Ok(false);
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until, .. } if now >= until => {
                *state = State::Probing;
                Ok(true)
            }
            State::Open { until, .. } => Err(until - now),
            State::Probing => Err(Duration::from_secs(1)),
        }
    }

    fn record(&self, probe: bool, ok: bool, policy: &CallPolicy, now: Instant) -> Option<Change> {
        if policy.breaker_failures == 0 {
            return None;
        }
        let mut state = self.lock();
        let open = |failures| State::Open {
            until: now + policy.breaker_open,
            failures,
        };
        match (*state, ok) {
            (State::Probing, true) if probe => {
                *state = State::Closed { failures: 0 };
                Some(Change::Closed)
            }
            (State::Probing, false) if probe => {
                *state = open(policy.breaker_failures);
                Some(Change::Opened {
                    failures: policy.breaker_failures,
                    for_: policy.breaker_open,
                })
            }
            (State::Closed { .. }, true) => {
                *state = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= policy.breaker_failures {
                    *state = open(failures);
                    Some(Change::Opened {
                        failures,
                        for_: policy.breaker_open,
                    })
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            // A call admitted before the breaker opened ends while it is
            // open or probing: the probe decides, not this call.
            _ => None,
        }
    }

    /// A probe that ended without an outcome (the caller went away): the
    /// next call probes instead.
    fn abandon_probe(&self, now: Instant) {
        let mut state = self.lock();
        if *state == State::Probing {
            *state = State::Open {
                until: now,
                failures: 0,
            };
        }
    }
}

/// One admitted attempt; dropping a probe unsettled lets another probe go.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    fn settle(&mut self, ok: bool, policy: &CallPolicy) -> Option<Change> {
        self.settled = true;
        self.breaker.record(self.probe, ok, policy, Instant::now())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.abandon_probe(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallPolicy {
        CallPolicy {
            breaker_failures: 3,
            breaker_open: Duration::from_secs(10),
            ..CallPolicy::default()
        }
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_and_a_probe_closes_it() {
        let policy = policy();
        let breaker = Breaker::default();
        let t0 = Instant::now();
        // A success in between resets the count.
        for ok in [false, false, true, false, false] {
            assert_eq!(breaker.admit(&policy, t0), Ok(false));
            assert_eq!(breaker.record(false, ok, &policy, t0), None);
        }
        assert_eq!(breaker.admit(&policy, t0), Ok(false));
        assert_eq!(
            breaker.record(false, false, &policy, t0),
            Some(Change::Opened {
                failures: 3,
                for_: Duration::from_secs(10)
            })
        );
        let later = t0 + Duration::from_secs(4);
        assert_eq!(breaker.admit(&policy, later), Err(Duration::from_secs(6)));

        // After the open period one probe goes; the others wait for it.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(breaker.admit(&policy, t1), Ok(true));
        assert!(breaker.admit(&policy, t1).is_err());
        // A failed probe opens it again for the whole period.
        assert!(breaker.record(true, false, &policy, t1).is_some());
        assert_eq!(breaker.admit(&policy, t1), Err(Duration::from_secs(10)));

        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(breaker.admit(&policy, t2), Ok(true));
        assert_eq!(
            breaker.record(true, true, &policy, t2),
            Some(Change::Closed)
        );
        assert_eq!(breaker.admit(&policy, t2), Ok(false));
        assert!(breaker.is_healthy());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let policy = policy();
        let breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            breaker.record(false, false, &policy, t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(breaker.admit(&policy, t1), Ok(true));
        drop(Permit {
            breaker: &breaker,
            probe: true,
            settled: false,
        });
        assert_eq!(breaker.admit(&policy, Instant::now()), Ok(true));
    }

    #[test]
    fn late_outcomes_do_not_override_the_probe() {
        let policy = policy();
        let breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            breaker.record(false, false, &policy, t0);
        }
        // A call admitted before it opened succeeds late: still open.
        assert_eq!(breaker.record(false, true, &policy, t0), None);
        assert!(breaker.admit(&policy, t0).is_err());
    }

    #[test]
    fn a_disabled_breaker_never_refuses() {
        let policy = CallPolicy {
            breaker_failures: 0,
            ..CallPolicy::default()
        };
        let breaker = Breaker::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(breaker.admit(&policy, now), Ok(false));
            assert_eq!(breaker.record(false, false, &policy, now), None);
        }
    }

    #[test]
    fn backoff_grows_and_stays_under_its_ceiling() {
        let base = Duration::from_millis(100);
        for attempt in 1..6 {
            let ceiling = base * (1 << (attempt - 1));
            for _ in 0..100 {
                assert!(backoff(base, attempt) <= ceiling);
            }
        }
    }

    #[test]
    fn targets_are_keyed_by_component_or_host_and_port() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert_eq!(
            target_key(&uri("http://User.spin.internal/users/1"), Some("User")),
            "user.spin.internal"
        );
        assert_eq!(
            target_key(&uri("https://API.example.com/x"), None),
            "api.example.com:443"
        );
        assert_eq!(
            target_key(&uri("http://127.0.0.1:8080/x"), None),
            "127.0.0.1:8080"
        );
        assert_eq!(
            target_key(&uri("http://example.com/"), None),
            "example.com:80"
        );
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_with_their_body_and_others_are_not() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = Calls::new(
            CallPolicy {
                retries: 2,
                backoff: Duration::from_millis(1),
                breaker_failures: 0,
                ..CallPolicy::default()
            },
            HashMap::new(),
        );
        let attempts = Arc::new(AtomicU32::new(0));
        let seen = attempts.clone();
        // Fails twice, then echoes the body.
        let send = move |request: Request<WasiBody>, _deadline: Instant| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let body = request.into_body().collect().await?.to_bytes();
                let mut response = Response::new(full_body(body));
                if n < 2 {
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                }
                Ok(response)
            }) as Pin<Box<dyn Future<Output = _> + std::marker::Send>>
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let request = |method: Method| {
            let mut request = Request::new(full_body("payload"));
            *request.method_mut() = method;
            *request.uri_mut() = "http://x.example/".parse().unwrap();
            request
        };

        let response = calls
            .call(
                "caller",
                "x.example:80",
                request(Method::PUT),
                deadline,
                &send,
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "payload");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);

        attempts.store(0, Ordering::SeqCst);
        let response = calls
            .call(
                "caller",
                "x.example:80",
                request(Method::POST),
                deadline,
                &send,
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
