//! A token as the gateway reads it (check 4 and the header members and
//! claims checks 5-10 read), parsed once: what the verified-token cache
//! holds.

use crate::policy::claims::ClaimSet;
use crate::policy::forward::HeaderMemo;
use crate::policy::jws::{self, DecodedJws, JoseHeader, JwsError};

/// What a token says, read and type-checked once, its signature not
/// necessarily checked: the header members checks 5-6 read and the claims.
/// Cached (behind an `Arc`) once its signature verified; holds no JSON and
/// no signature.
#[derive(Debug)]
pub(crate) struct ParsedToken {
    pub header: JoseHeader,
    pub claims: ClaimSet,
    /// The verified headers last built for this token's requests.
    pub forwarded: HeaderMemo,
}

impl ParsedToken {
    #[cfg(test)]
    pub(crate) fn parse(token: &str) -> Result<ParsedToken, JwsError> {
        Self::parse_signed(token).map(|(parsed, _)| parsed)
    }

    /// Check 4 whole (parts, base64url, strict JSON), then the header
    /// members and the claims, read straight from the JSON. The decoded
    /// token comes along for its signature (check 9).
    pub(crate) fn parse_signed(token: &str) -> Result<(ParsedToken, DecodedJws), JwsError> {
        let decoded = jws::decode_compact(token)?;
        let compact = decoded.parse()?;
        let parsed = ParsedToken {
            header: JoseHeader::from_map(&compact.header)?,
            claims: ClaimSet::from_payload(&compact.payload),
            forwarded: HeaderMemo::default(),
        };
        Ok((parsed, decoded))
    }
}
