//! Keyset cursors over a descending integer id (audit sequence numbers, alert ids): the opaque cursor is the last
//! id of the page, hex-encoded, and the next page is everything below it.

use crate::StoreError;

/// The id a cursor stands for (`None` without a cursor); anything else is refused as an invalid cursor.
pub(crate) fn decode(cursor: Option<&str>) -> Result<Option<i64>, StoreError> {
    cursor
        .map(|c| {
            hex::decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| StoreError::BadQuery("invalid cursor".into()))
        })
        .transpose()
}

/// Cuts `items` (fetched with `LIMIT limit + 1`) to the page and returns the next page's cursor, if there is one.
pub(crate) fn page<T>(items: &mut Vec<T>, limit: u32, id: impl Fn(&T) -> i64) -> Option<String> {
    if items.len() <= limit as usize {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(|last| hex::encode(id(last).to_string()))
}
