//! A page's live updates: a server-sent event stream that sends the page's slots once, then the
//! slots that changed each time the figures change (the change signal `WatchCampaigns` waits
//! on, [`Figures::subscribe`](crate::figures::Figures::subscribe)), at most once per
//! `watch_interval`. The caller's credential or link is checked again before each update and
//! every second: revoked, expired or withdrawn, the stream sends `ended` and stops. Each stream's
//! buffer is bounded; it ends when the browser goes away or suivi shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{PagesState, Slots, security_headers};
use crate::auth::Caller;

/// Events waiting for a slow browser before the stream waits.
const LIVE_BUFFER: usize = 4;
/// How often a quiet stream checks that its caller's access still stands.
const ACCESS_RECHECK: Duration = Duration::from_secs(1);

/// The event stream of a page whose slots `make` gives for a caller (`None`: no longer
/// visible to it).
pub(super) fn respond<F>(state: PagesState, caller: Caller, make: F) -> Response
where
    F: Fn(&Caller) -> Option<Slots> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(LIVE_BUFFER);
    tokio::spawn(run(state, caller, make, sender));
    let mut response = Sse::new(ReceiverStream::new(receiver))
        .keep_alive(KeepAlive::default())
        .into_response();
    security_headers(response.headers_mut());
    response
}

async fn run<F>(
    state: PagesState,
    mut caller: Caller,
    make: F,
    sender: mpsc::Sender<Result<Event, Infallible>>,
) where
    F: Fn(&Caller) -> Option<Slots> + Send + 'static,
{
    let ended = || Ok(Event::default().event("ended").data("ended"));
    let mut changes = state.figures.subscribe();
    let mut sent = Slots::default();
    let mut figures_changed = true;
    loop {
        caller = match state.gate.current(&caller) {
            Ok(current) => current,
            Err(_) => {
                let _ = sender.send(ended()).await;
                return;
            }
        };
        if figures_changed {
            let Some(slots) = make(&caller) else {
                let _ = sender.send(ended()).await;
                return;
            };
            let changed = slots.changed_since(&sent);
            if !changed.is_empty() {
                let event = Event::default().event("slots").json_data(&changed);
                let Ok(event) = event else { return };
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
                sent = slots;
            }
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = sender.closed() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                figures_changed = true;
            }
            () = tokio::time::sleep(ACCESS_RECHECK) => {
                figures_changed = false;
                continue;
            }
        }
        // Throttle: changes arriving meanwhile are sent together after the interval.
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = sender.closed() => return,
            () = tokio::time::sleep(state.watch_interval) => {}
        }
    }
}
