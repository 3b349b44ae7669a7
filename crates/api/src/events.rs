//! The sandboxes' events: created, started, stopped, updated, removed, as the state store
//! records them (in the transaction of each change, whoever made it), read as a list or
//! followed as server-sent events.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use paddock_engine::Engine;
use paddock_engine::sandboxes::parse_name;
use paddock_store::{EventQuery, SandboxEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::sandboxes::{ApiState, blocking, problem, tokio_stream_from};
use crate::{Json, Problem};

/// The routes, to merge into the API's router.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(events))
        .routes(routes!(events_stream))
}

/// How often a followed event log is read for new rows (and running sandboxes looked at).
const POLL: Duration = Duration::from_millis(200);

/// Which events to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only this sandbox's events.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,47}$")]
    pub sandbox: Option<String>,
    /// Only events after this id (to page on, or to follow from).
    pub after: Option<i64>,
    /// At most this many, the newest (default 100, at most 10,000).
    #[param(maximum = 10000)]
    pub limit: Option<u32>,
}

impl EventParams {
    fn query(self) -> Result<EventQuery, Problem> {
        if let Some(s) = &self.sandbox {
            parse_name(s).map_err(|e| problem(&e))?;
        }
        if self.limit.is_some_and(|l| l > 10_000) {
            return Err(Problem::unprocessable("limit: at most 10000"));
        }
        Ok(EventQuery {
            sandbox: self.sandbox,
            after: self.after,
            limit: Some(self.limit.unwrap_or(100)),
        })
    }
}

/// The events read.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventLog {
    /// Oldest first.
    pub events: Vec<SandboxEvent>,
}

/// The sandboxes' recorded events, oldest first: `created`, `started`, `stopped` (with the
/// exit status and the limits it ran into), `updated` (limits or ports) and `removed`. The
/// newest 10,000 are kept.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "sandboxes",
    params(EventParams),
    responses((status = 200, body = EventLog))
)]
async fn events(
    State(state): State<ApiState>,
    Query(q): Query<EventParams>,
) -> Result<Json<EventLog>, Problem> {
    let q = q.query()?;
    let (events, _) = blocking(&state, move |e, _| Ok(e.store().events(&q)?)).await?;
    Ok(Json(EventLog { events }))
}

/// The sandboxes' events as they happen, as server-sent events (`text/event-stream`): each is
/// `event:` its kind, `id:` its id, `data:` the event as JSON. It starts with the last `limit`
/// events (none with `limit=0`) or those after `after` (or the `Last-Event-ID` header a
/// reconnecting client sends), and goes on until the client leaves. A sandbox whose supervisor
/// ended without recording it (killed with SIGKILL) is reported once as `stopped` with no id,
/// its `cause` saying so.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "sandboxes",
    params(EventParams),
    responses((status = 200, content_type = "text/event-stream", body = SandboxEvent))
)]
async fn events_stream(
    State(state): State<ApiState>,
    Query(q): Query<EventParams>,
    headers: http::HeaderMap,
) -> Result<axum::response::Response, Problem> {
    let mut q = q.query()?;
    q.after = last_event_id(&headers).or(q.after);
    let mut follower = Follower::default();
    follow(&state, POLL, move |engine| {
        let batch = follower.next(engine, &mut q)?;
        Ok(batch
            .into_iter()
            .filter_map(|(id, event)| {
                let sse = Event::default().event(event.kind.clone());
                let sse = match id {
                    Some(id) => sse.id(id.to_string()),
                    None => sse,
                };
                sse.json_data(&event).ok()
            })
            .collect())
    })
    .await
}

/// The id a reconnecting client last saw (`Last-Event-ID`).
pub(crate) fn last_event_id(headers: &http::HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Where following a log goes on from after its first read: `after` when given, else where
/// the log ends now (`newest`, asked before that first read), so that `limit=0` sends nothing of
/// the past and then everything new.
pub(crate) fn resume_from(
    after: Option<i64>,
    newest: impl FnOnce() -> paddock_engine::Result<Option<i64>>,
) -> paddock_engine::Result<i64> {
    match after {
        Some(after) => Ok(after),
        None => Ok(newest()?.unwrap_or(0)),
    }
}

/// Answers with server-sent events: `next` is asked every `poll`, on a blocking thread with an
/// engine of its own, for the events that came since it was last asked, until the client
/// leaves or `next` fails. The engine is opened before the answer starts, so a state directory
/// that cannot be opened is a problem answer.
pub(crate) async fn follow<F>(
    state: &ApiState,
    poll: Duration,
    mut next: F,
) -> Result<axum::response::Response, Problem>
where
    F: FnMut(&Engine) -> paddock_engine::Result<Vec<Event>> + Send + 'static,
{
    let dirs = state.dirs().clone();
    let engine = tokio::task::spawn_blocking(move || Engine::at(dirs))
        .await
        .map_err(|_| Problem::internal("the operation's thread failed"))?
        .map_err(|e| problem(&e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(256);
    tokio::task::spawn_blocking(move || {
        while let Ok(events) = next(&engine) {
            for event in events {
                if tx.blocking_send(Ok(event)).is_err() {
                    // The client left.
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            std::thread::sleep(poll);
        }
    });
    Ok(Sse::new(tokio_stream_from(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What a followed stream has reported of sandboxes whose supervisor vanished.
#[derive(Debug, Default)]
struct Follower {
    /// Sandboxes recorded as running whose lock is free, already reported as stopped.
    vanished: BTreeSet<String>,
}

impl Follower {
    /// The events recorded since the last call, then one `stopped` for each sandbox that is
    /// recorded as running while no supervisor holds its lock (each with its id, or none).
    fn next(
        &mut self,
        engine: &Engine,
        q: &mut EventQuery,
    ) -> paddock_engine::Result<Vec<(Option<i64>, SandboxEvent)>> {
        let end = resume_from(q.after, || {
            let newest = EventQuery {
                limit: Some(1),
                ..q.clone()
            };
            Ok(engine.store().events(&newest)?.last().map(|e| e.id))
        })?;
        let rows = engine.store().events(q)?;
        q.after = Some(rows.last().map_or(end, |e| e.id.max(end)));
        q.limit = None;
        let mut out: Vec<_> = rows.into_iter().map(|e| (Some(e.id), e)).collect();
        for (_, e) in &out {
            if e.kind == "started" || e.kind == "removed" {
                self.vanished.remove(&e.sandbox);
            }
        }
        for rec in engine.store().list()? {
            let name = rec.spec.name.as_str();
            if q.sandbox.as_deref().is_some_and(|s| s != name)
                || rec.state != paddock_core::SandboxState::Running
                || paddock_engine::sandboxes::running(engine.dirs(), &rec.spec.name)
            {
                continue;
            }
            if self.vanished.insert(name.to_owned()) {
                out.push((
                    None,
                    SandboxEvent {
                        id: 0,
                        ts: now_ms(),
                        sandbox: name.to_owned(),
                        kind: "stopped".into(),
                        state: Some("stopped".into()),
                        exit: None,
                        cause: Some(
                            "its supervisor ended without recording an exit (killed)".into(),
                        ),
                    },
                ));
            }
        }
        Ok(out)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use paddock_core::Dirs;

    use super::*;

    fn spec(name: &str) -> paddock_core::SandboxSpec {
        paddock_core::SandboxSpec {
            name: name.parse().unwrap(),
            backend: "ns".into(),
            image: "default".into(),
            workspace: paddock_policy::AbsPath::try_from("/w/p").unwrap(),
            mounts: vec![],
            limits: paddock_policy::Limits::default(),
            env: vec![],
            user: paddock_policy::User::Agent,
            no_new_privs: false,
            network: paddock_core::Network::Proxy,
            allow_git_config: false,
            ports: vec![],
            dangerously_mount_sockets: false,
            host_ca: true,
            upstream_proxy: None,
            review: false,
            discard_layer: false,
            ask_timeout_s: None,
            docker: false,
        }
    }

    fn kinds(batch: &[(Option<i64>, SandboxEvent)]) -> Vec<(bool, String, String)> {
        batch
            .iter()
            .map(|(id, e)| (id.is_some(), e.sandbox.clone(), e.kind.clone()))
            .collect()
    }

    #[test]
    fn following_starts_where_asked_and_reports_a_vanished_supervisor_once() {
        let home = tempfile::tempdir().unwrap();
        let engine = Engine::at(Dirs::at(home.path().to_owned()).unwrap()).unwrap();
        let store = engine.store();
        store.insert(&spec("a")).unwrap();
        store.insert(&spec("b")).unwrap();
        let k = |id: bool, s: &str, kind: &str| (id, s.to_owned(), kind.to_owned());

        // limit=0: nothing of the past, then what comes.
        let mut none = EventQuery {
            limit: Some(0),
            ..EventQuery::default()
        };
        let mut from_now = Follower::default();
        assert!(from_now.next(&engine, &mut none).unwrap().is_empty());
        assert!(from_now.next(&engine, &mut none).unwrap().is_empty());
        // limit=1: the newest one of the past.
        let mut one = EventQuery {
            limit: Some(1),
            ..EventQuery::default()
        };
        let mut last = Follower::default();
        assert_eq!(
            kinds(&last.next(&engine, &mut one).unwrap()),
            [k(true, "b", "created")]
        );
        // One sandbox only.
        let mut only_a = EventQuery {
            sandbox: Some("a".into()),
            limit: Some(100),
            ..EventQuery::default()
        };
        let mut of_a = Follower::default();
        assert_eq!(
            kinds(&of_a.next(&engine, &mut only_a).unwrap()),
            [k(true, "a", "created")]
        );

        // "a" is recorded as running, but no supervisor holds its lock: it was killed.
        let a: paddock_core::SandboxName = "a".parse().unwrap();
        store.mark_running(&a, 1).unwrap();
        let vanished = [k(true, "a", "started"), k(false, "a", "stopped")];
        assert_eq!(kinds(&from_now.next(&engine, &mut none).unwrap()), vanished);
        assert_eq!(kinds(&of_a.next(&engine, &mut only_a).unwrap()), vanished);
        // Said once.
        assert!(from_now.next(&engine, &mut none).unwrap().is_empty());
        // A real stop and removal come as recorded.
        store.mark_stopped(&a, Some(0), None).unwrap();
        store.remove_sandbox(&a).unwrap();
        assert_eq!(
            kinds(&from_now.next(&engine, &mut none).unwrap()),
            [k(true, "a", "stopped"), k(true, "a", "removed")]
        );
        let b: paddock_core::SandboxName = "b".parse().unwrap();
        store.mark_running(&b, 1).unwrap();
        assert_eq!(
            kinds(&of_a.next(&engine, &mut only_a).unwrap()),
            [k(true, "a", "stopped"), k(true, "a", "removed")]
        );
    }
}
