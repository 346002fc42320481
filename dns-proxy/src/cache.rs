//! Local answers kept by question, so a repeated query costs a copy instead of a parse and an
//! encode. A query differs from one already answered only in its ID and the case of its name
//! (clients that randomise case, "0x20", ask every time in another). Both are put back from
//! the query into the kept answer; anything else that differs (flags, EDNS, type) is another
//! entry. The cache belongs to one table of names and is emptied when the table changes.

use crate::names::Names;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries kept at most; past that the cache starts over (mesh names are few).
const MAX_ENTRIES: usize = 4096;

const HEADER: usize = 12;

#[derive(Default)]
pub struct AnswerCache {
    /// The table the entries were answered from; held so its address is not reused.
    table: Option<Arc<Names>>,
    /// The query without its ID, name lowercased, to the answer as first encoded.
    entries: HashMap<Vec<u8>, Vec<u8>>,
}

impl AnswerCache {
    /// The answer to `query` if an equal one was answered from `names`, with `query`'s ID and
    /// question.
    pub fn get(&mut self, query: &[u8], names: &Arc<Names>) -> Option<Vec<u8>> {
        self.follow(names);
        let end = question_end(query)?;
        let kept = self.entries.get(&key(query, end))?;
        let mut answer = kept.clone();
        answer[..2].copy_from_slice(&query[..2]);
        answer[HEADER..end].copy_from_slice(&query[HEADER..end]);
        Some(answer)
    }

    /// Keeps `answer` to `query` (answered from `names`), if its question is `query`'s as sent.
    pub fn put(&mut self, query: &[u8], answer: &[u8], names: &Arc<Names>) {
        self.follow(names);
        let Some(end) = question_end(query) else {
            return;
        };
        if answer.get(HEADER..end) != query.get(HEADER..end) {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(key(query, end), answer.to_vec());
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn follow(&mut self, names: &Arc<Names>) {
        if !self.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, names)) {
            self.entries.clear();
            self.table = Some(names.clone());
        }
    }
}

/// Where the first question ends (after its type and class), if its name is plain labels: a
/// compressed or malformed name is never cached.
fn question_end(query: &[u8]) -> Option<usize> {
    let mut at = HEADER;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    let end = at + 1 + 4;
    (end <= query.len()).then_some(end)
}

/// The query from its flags on, with the name's letters lowercased (length bytes are at most
/// 63, so never letters).
fn key(query: &[u8], end: usize) -> Vec<u8> {
    let mut key = query[2..].to_vec();
    let name = HEADER - 2..end - 2 - 4;
    key[name].make_ascii_lowercase();
    key
}

#[cfg(test)]
mod tests;
