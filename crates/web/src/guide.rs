//! The in-app guide to the permission concepts (the seed's training section), with examples from the demo
//! organization. Static text in both languages; it shows no data.

use crate::error::render;
use crate::viewer::{Chrome, Viewer};
use askama::Template;
use axum::response::Response;

#[derive(Template)]
#[template(path = "guide.html")]
struct GuidePage {
    chrome: Chrome,
    chinese: bool,
}

pub async fn page(v: Viewer) -> Response {
    render(&GuidePage { chinese: v.lang == crate::i18n::Lang::Zh, chrome: v.chrome("guide.title", "/app/guide") })
}
