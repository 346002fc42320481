//! A remote API server is hostile until checked: its answers are read through a body that
//! refuses any run of more than [`MAX_LINE`] bytes without a newline. A watch event is one
//! line and a list page one document, so this bounds each event and each page, where kube's
//! own line reader has no limit; with list pages of [`PAGE_SIZE`] objects, a legitimate page
//! stays far below it.

use bytes::Bytes;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The largest watch event or list page taken from an API server.
pub const MAX_LINE: usize = 64 << 20;
/// Objects per list page (kube's default too); a page of 500 Pods is a few MiB.
pub const PAGE_SIZE: u32 = 500;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("the API server sent more than {0} bytes without a newline (an event or page too large)")]
pub struct TooLong(usize);

/// `inner`, failing once a line grows past `max` bytes.
pub struct LineBounded<B> {
    inner: B,
    run: usize,
    max: usize,
}

impl<B> LineBounded<B> {
    pub fn new(inner: B, max: usize) -> Self {
        LineBounded { inner, run: 0, max }
    }
}

impl<B> Body for LineBounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            self.run = match data.iter().rposition(|b| *b == b'\n') {
                Some(i) => data.len() - i - 1,
                None => self.run + data.len(),
            };
            if self.run > self.max {
                return Poll::Ready(Some(Err(Box::new(TooLong(self.max)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// A client for `config` whose every answer is [`LineBounded`].
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    let layer =
        tower::util::MapResponseLayer::new(|resp: http::Response<Box<kube::client::DynBody>>| {
            resp.map(|b| LineBounded::new(b, MAX_LINE))
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    fn body(chunks: &[&'static [u8]]) -> LineBounded<StreamBody<Frames>> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        LineBounded::new(StreamBody::new(futures::stream::iter(frames)), 10)
    }

    #[tokio::test]
    async fn lines_within_the_bound_pass_and_a_longer_one_fails() {
        let ok = body(&[b"0123456789\n01234", b"56789\nabc"]).collect().await;
        assert_eq!(ok.unwrap().to_bytes(), &b"0123456789\n0123456789\nabc"[..]);
        // Eleven bytes without a newline, split across frames.
        let err = body(&[b"012345", b"\n0123456", b"7890"])
            .collect()
            .await
            .err();
        assert!(err.unwrap().to_string().contains("without a newline"));
    }
}
