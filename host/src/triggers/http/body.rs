//! The request body as a guest sees it: capped at the component's limit.
//!
//! Going over the limit (by `content-length` or by counting chunks) makes the
//! body fail with `HttpRequestBodySize` and raises a flag; the trigger then
//! answers `413` unless the component answered before it needed the body
//! (its own 404/405/401, which come first in the API's order of checks).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

pub struct LimitedBody<B: Body<Data = Bytes> + Send + Unpin + 'static> {
    /// `None` only once dropped.
    inner: Option<B>,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

/// Most of an unread request body drained after the answer, and for how long.
const DRAIN_MAX_BYTES: usize = 16 << 20;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(5);

impl<B: Body<Data = Bytes> + Send + Unpin + 'static> LimitedBody<B> {
    /// `declared`: the request's `content-length`, if any.
    pub fn new(inner: B, limit: u64, declared: Option<u64>) -> (Self, Arc<AtomicBool>) {
        let exceeded = Arc::new(AtomicBool::new(declared.is_some_and(|len| len > limit)));
        let body = Self {
            inner: Some(inner),
            remaining: limit,
            limit,
            exceeded: exceeded.clone(),
        };
        (body, exceeded)
    }
}

/// A component that answers without reading the whole body (a 405, a 413)
/// leaves the client still sending it; closing the socket on unread data
/// makes the kernel reset the connection, and the client may lose the answer
/// with it. So what is left is read and discarded in the background, within
/// bounds, and the connection can even be kept alive.
impl<B: Body<Data = Bytes> + Send + Unpin + 'static> Drop for LimitedBody<B> {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use http_body_util::BodyExt as _;
            let drain = async {
                let mut drained = 0;
                while let Some(Ok(frame)) = inner.frame().await {
                    drained += frame.data_ref().map_or(0, Bytes::len);
                    if drained > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
        });
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<HttpError>,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(self.limit)))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(self.limit)))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

/// The longest a response head waits for its body to finish.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);
/// Bodies larger than this are streamed as they come.
const SETTLE_MAX_BYTES: usize = 64 << 10;

/// Waits briefly for a guest's (usually small) response body to complete, so
/// it goes out in one write with a `content-length` instead of a chunked
/// stream trickling in from the guest's task; and a guest that fails before
/// finishing its body becomes a clean `500` instead of a truncated response.
/// Large or slow (streaming) bodies pass through after what was buffered.
pub async fn settle(
    response: http::Response<WasiBody>,
) -> Result<http::Response<WasiBody>, HttpError> {
    use http_body_util::BodyExt as _;

    let (parts, mut body) = response.into_parts();
    let mut buffered: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let until = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        match tokio::time::timeout_at(until, body.frame()).await {
            Ok(None) => {
                let whole: Bytes = match buffered.len() {
                    0 => Bytes::new(),
                    1 => buffered.pop().unwrap_or_default(),
                    _ => buffered.concat().into(),
                };
                return Ok(http::Response::from_parts(parts, full(whole)));
            }
            Ok(Some(Err(err))) => return Err(err),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    buffered.push(data);
                    if size > SETTLE_MAX_BYTES {
                        break;
                    }
                }
                // Trailers: stream from here on.
                Err(frame) => {
                    let rest = resume(buffered, Some(frame), body);
                    return Ok(http::Response::from_parts(parts, rest));
                }
            },
            Err(_) => break,
        }
    }
    Ok(http::Response::from_parts(
        parts,
        resume(buffered, None, body),
    ))
}

/// The buffered frames, then whatever the body still has.
fn resume(buffered: Vec<Bytes>, extra: Option<Frame<Bytes>>, rest: WasiBody) -> WasiBody {
    use futures::StreamExt as _;
    use http_body_util::BodyExt as _;

    let head = buffered
        .into_iter()
        .map(Frame::data)
        .chain(extra)
        .map(Ok::<_, HttpError>);
    let stream = futures::stream::iter(head).chain(http_body_util::BodyStream::new(rest));
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

fn full(bytes: Bytes) -> WasiBody {
    crate::capabilities::outbound_http::full_body(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full, StreamBody};

    fn chunks(sizes: &[usize]) -> impl Body<Data = Bytes, Error = HttpError> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, HttpError>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn exactly_the_limit_is_allowed() {
        let (body, exceeded) = LimitedBody::new(chunks(&[600, 424]), 1024, None);
        let bytes = body.collect().await.expect("within limit").to_bytes();
        assert_eq!(bytes.len(), 1024);
        assert!(!exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn one_byte_over_fails_and_flags() {
        let (body, exceeded) = LimitedBody::new(chunks(&[600, 425]), 1024, None);
        assert!(body.collect().await.is_err());
        assert!(exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn declared_length_over_limit_fails_at_once() {
        let full = Full::new(Bytes::from_static(b"tiny"))
            .map_err(|never: std::convert::Infallible| -> HttpError { match never {} });
        let (body, exceeded) = LimitedBody::new(full, 1024, Some(4096));
        assert!(exceeded.load(Ordering::Relaxed));
        assert!(body.collect().await.is_err());
    }
}
