//! W3C trace context (SPEC section 13): a valid incoming `traceparent` is
//! honoured (its trace id kept, the gateway's own span id as the new
//! parent), anything else starts a new trace; `tracestate` travels only with
//! a valid `traceparent`. Pure: no I/O.

/// One request's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The gateway's span id: 16 lowercase hex digits.
    pub span_id: String,
    /// The caller's span id, when the trace was honoured.
    pub parent_span_id: Option<String>,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// The caller's `tracestate`, kept only with a valid `traceparent`.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Honours `traceparent` / `tracestate` when valid, else starts a trace
    /// (sampled). `random` gives 24 random bytes (trace id, span id).
    pub fn from_headers(
        traceparent: Option<&[u8]>,
        tracestate: Option<&[u8]>,
        random: [u8; 24],
    ) -> Self {
        let span_id = hex(&random[16..24]);
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
                flags,
                tracestate: tracestate
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= 512 && s.is_ascii())
                    .map(str::to_string),
            },
            None => {
                let mut trace = random;
                if trace[..16].iter().all(|b| *b == 0) {
                    trace[15] = 1;
                }
                Self {
                    trace_id: hex(&trace[..16]),
                    span_id,
                    parent_span_id: None,
                    flags: 1,
                    tracestate: None,
                }
            }
        }
    }

    /// The `traceparent` sent upstream: this trace, the gateway's span.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// The `traceparent` naming another of the gateway's spans (its
    /// upstream call's, when spans are exported).
    pub fn traceparent_for(&self, span_id: &str) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, span_id, self.flags)
    }

    /// 24 random bytes from the system's generator (via two v4 UUIDs).
    pub fn random() -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        out[16..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        if out[16..].iter().all(|b| *b == 0) {
            out[23] = 1;
        }
        out
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>` (a later version may add `-...`); all-zero
/// ids and version `ff` are invalid. Upper-case hex is invalid.
fn parse_traceparent(value: &[u8]) -> Option<(String, String, u8)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let mut parts = text.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !lower_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if !lower_hex(parent, 16) || parent.bytes().all(|b| b == b'0') || !lower_hex(flags, 2) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id.to_string(), parent.to_string(), flags))
}

/// Lower-case hex, one allocation (a `format!` per byte cost 24 of them,
/// ~4,000 instructions, on every request that came without a trace).
pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: [u8; 24] = [7; 24];
    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn honours_a_valid_traceparent() {
        let t = TraceContext::from_headers(Some(VALID), Some(b"vendor=abc"), RANDOM);
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(t.tracestate.as_deref(), Some("vendor=abc"));
        assert_eq!(
            t.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0707070707070707-01"
        );
    }

    #[test]
    fn starts_a_trace_for_anything_invalid() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00-4bf92f35-00f067aa0ba902b7-01",
            b"garbage",
            b"\xff\xfe",
        ] {
            let t = TraceContext::from_headers(Some(bad), Some(b"vendor=abc"), RANDOM);
            assert_eq!(t.trace_id, "07".repeat(16), "{bad:?}");
            assert_eq!(t.parent_span_id, None);
            assert_eq!(t.tracestate, None, "tracestate only with a valid parent");
        }
        // A later version's extra fields are allowed.
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        let t = TraceContext::from_headers(Some(later), None, RANDOM);
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceContext::random() != TraceContext::random());
    }
}
