//! Answers a call whose client deadline (`grpc-timeout`) passes with `DEADLINE_EXCEEDED`.
//!
//! tonic's server enforces `grpc-timeout` itself, but answers an expired call with
//! `CANCELLED "Timeout expired"`. gRPC's status code table says a deadline that expires
//! before the server answers is `DEADLINE_EXCEEDED`, which is what containerd and CRI-O
//! (grpc-go) send and what clients check for: critest's "should timeout if requested"
//! wants it, and under load tonic's `CANCELLED` reached critest before its own deadline
//! fired. This layer sits inside tonic's timeout and starts its clock first (tonic calls
//! the inner service before it arms its own timer, and polls the inner future first), so
//! it always answers before tonic's timer does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Parses a `grpc-timeout` header value: at most 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 spec defines it.
/// Anything else is `None`: the call then runs without a deadline, as in tonic.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Deadline<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        // Armed before the inner call so that the clock starts no later than tonic's.
        let expiry = timeout.map(tokio::time::sleep);
        let method = req.uri().path().to_string();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Some(expiry) = expiry else {
                return fut.await;
            };
            tokio::select! {
                biased;
                res = fut => res,
                () = expiry => {
                    tracing::debug!(%method, ?timeout, "client deadline passed");
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "the client's deadline ({timeout:?}) passed before {method} finished"
                    ))
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tower::{Layer, Service, ServiceExt};

    #[test]
    fn timeouts_in_every_unit() {
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"10S"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_grpc_timeout(b"250m"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_grpc_timeout(b"999u"),
            Some(Duration::from_micros(999))
        );
        assert_eq!(
            parse_grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn malformed_timeouts_are_no_deadline() {
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"10s",
            b"123456789S",
            b"-1S",
            b"+1S",
            b"1.5S",
            b" 1S",
            b"\xff1S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_header_value_parses_without_panic(value in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_grpc_timeout(&value);
        }

        #[test]
        fn valid_values_round_trip(amount in 0u64..100_000_000, unit in 0usize..6) {
            let units = [(b'H', 3_600_000_000_000u128), (b'M', 60_000_000_000), (b'S', 1_000_000_000),
                (b'm', 1_000_000), (b'u', 1_000), (b'n', 1)];
            let (c, nanos) = units[unit];
            let mut value = amount.to_string().into_bytes();
            value.push(c);
            let parsed = parse_grpc_timeout(&value);
            prop_assert_eq!(parsed.map(|d| d.as_nanos()), Some(u128::from(amount) * nanos));
        }
    }

    async fn slow(
        _req: http::Request<()>,
    ) -> Result<http::Response<String>, std::convert::Infallible> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(http::Response::new("done".to_string()))
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut req = http::Request::builder().uri("/runtime.v1.ImageService/PullImage");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        req.body(()).unwrap()
    }

    #[tokio::test]
    async fn an_expired_deadline_is_deadline_exceeded() {
        let mut svc = DeadlineLayer.layer(tower::service_fn(slow));
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(request(Some("1m")))
            .await
            .unwrap();
        assert_eq!(res.headers()["grpc-status"], "4");
        let message = res.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("PullImage"), "{message}");
    }

    #[tokio::test]
    async fn calls_within_their_deadline_or_without_one_are_untouched() {
        let mut svc = DeadlineLayer.layer(tower::service_fn(slow));
        for timeout in [Some("5S"), None, Some("garbage")] {
            let res = svc
                .ready()
                .await
                .unwrap()
                .call(request(timeout))
                .await
                .unwrap();
            assert!(res.headers().get("grpc-status").is_none(), "{timeout:?}");
            assert_eq!(res.body(), "done");
        }
    }
}
