//! Fuzz target `request_decoding`: one request body, decoded as every request the API takes.

use serde::{Serialize, de::DeserializeOwned};

use crate::api::{
    handlers::decode_body,
    wire::{IntrospectRequest, MintRequest, RegisterRequest, RevokeRequest, SealSelfRequest},
};

/// Decodes `body` as each request type the API reads; whatever decodes must encode back to a
/// body that decodes to the same request (the CLI and the server share these types, so a
/// request that does not survive the round trip would mean they disagree about it). Returns
/// how many of the types decoded it.
pub fn decode_request(body: &[u8]) -> usize {
    [
        survives_round_trip::<RegisterRequest>(body),
        survives_round_trip::<MintRequest>(body),
        survives_round_trip::<IntrospectRequest>(body),
        survives_round_trip::<RevokeRequest>(body),
        survives_round_trip::<SealSelfRequest>(body),
    ]
    .into_iter()
    .filter(|&decoded| decoded)
    .count()
}

fn survives_round_trip<Request: DeserializeOwned + Serialize>(body: &[u8]) -> bool {
    let Ok(request) = decode_body::<Request>(body) else {
        return false;
    };
    let encoded = serde_json::to_vec(&request).expect("API requests always serialize");
    let decoded: Request = decode_body(&encoded).unwrap_or_else(|err| {
        panic!(
            "{} decoded from input but not from its own encoding {}: {err}",
            std::any::type_name::<Request>(),
            String::from_utf8_lossy(&encoded)
        )
    });
    let encoded_again = serde_json::to_vec(&decoded).expect("API requests always serialize");
    assert_eq!(
        encoded,
        encoded_again,
        "{} changed in a round trip",
        std::any::type_name::<Request>()
    );
    true
}
