//! `exchange.chain` as written: the two legs of identity chaining. The first is a token
//! exchange for a JWT grant addressed to the second authority; the second presents that
//! grant with the jwt-bearer grant. Where the token comes from and where it goes stay on
//! the exchange, since they concern the request, not a leg.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use tokex_common::values::Text;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLeg {
    /// The authority this leg's request goes to.
    #[schemars(with = "Text")]
    pub authority: Spanned<Text>,
    /// First leg: the second authority's identifier (default its `issuer`); refused on
    /// the second, a jwt-bearer grant.
    #[schemars(with = "Option<Text>")]
    pub audience: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub resource: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub scope: Option<Spanned<Text>>,
    /// First leg only (default `urn:ietf:params:oauth:token-type:access_token`).
    #[schemars(with = "Option<Text>")]
    pub subject_token_type: Option<Spanned<Text>>,
    /// First leg only (default `urn:ietf:params:oauth:token-type:jwt`).
    #[schemars(with = "Option<Text>")]
    pub requested_token_type: Option<Spanned<Text>>,
    /// Form parameters added to this leg's request, as `exchange.extra_params`.
    #[schemars(with = "Option<BTreeMap<String, Text>>")]
    pub extra_params: Option<BTreeMap<String, Spanned<Text>>>,
}
