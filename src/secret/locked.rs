//! Buffers for the token's bytes in memory locked against swap (`mlock`, through `region`'s
//! safe [`region::lock`] guard), zeroed before they are unlocked and freed.
//!
//! `mlock` works on whole pages and does not count: unlocking one buffer unlocks every page it
//! touches, also one that holds another locked buffer (during a reload the old and the new
//! token's buffers have the same sizes, and the allocator puts them side by side). So the locks
//! are kept here per page, with the number of live buffers on each, and a page is unlocked
//! when the last of them is dropped.
//!
//! When the kernel refuses (`RLIMIT_MEMLOCK` too low and no `CAP_IPC_LOCK`), the buffer is
//! used unlocked and one warning is logged for the life of the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use zeroize::Zeroize;

/// Secret bytes, in pages locked against swap while they live (where the kernel allows it).
/// Dropping zeroes them, then unlocks their pages, then frees them.
pub(crate) struct LockedBytes {
    bytes: Box<[u8]>,
    /// Whether [`PAGES`] counts this buffer (its pages were locked).
    locked: bool,
}

impl LockedBytes {
    /// A buffer of exactly the length of `parts`, locked, then filled with them one after the
    /// other: the secret is written only into locked memory, and never into a buffer that
    /// grows (a reallocation would leave a copy in freed memory).
    pub(crate) fn concat(parts: &[&[u8]]) -> Self {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut bytes = vec![0u8; len].into_boxed_slice();
        let locked = match PAGES.acquire(&bytes) {
            Ok(()) => true,
            Err(e) => {
                warn_once(e);
                false
            }
        };
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Self { bytes, locked }
    }
}

impl std::ops::Deref for LockedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for LockedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for LockedBytes {
    fn drop(&mut self) {
        self.bytes.zeroize();
        if self.locked {
            PAGES.release(&self.bytes);
        }
    }
}

/// Every page this process locked for a [`LockedBytes`].
static PAGES: PageLocks = PageLocks::new();

/// Pages locked, by address, with the number of live buffers on each.
struct PageLocks(Mutex<BTreeMap<usize, PageLock>>);

struct PageLock {
    buffers: usize,
    /// Unlocks the page when dropped.
    _guard: region::LockGuard,
}

impl PageLocks {
    const fn new() -> Self {
        Self(Mutex::new(BTreeMap::new()))
    }

    /// Counts `bytes` on each of its pages, locking those not locked yet. All or nothing: when
    /// a page cannot be locked, the pages counted so far are released again.
    fn acquire(&self, bytes: &[u8]) -> Result<(), std::io::Error> {
        let mut pages = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut counted = Vec::new();
        for (page, on_page) in pages_of(bytes) {
            if let Some(lock) = pages.get_mut(&page) {
                lock.buffers += 1;
            } else {
                match region::lock(on_page, 1) {
                    Ok(guard) => {
                        pages.insert(
                            page,
                            PageLock {
                                buffers: 1,
                                _guard: guard,
                            },
                        );
                    }
                    Err(e) => {
                        for page in counted {
                            uncount(&mut pages, page);
                        }
                        return Err(e.into());
                    }
                }
            }
            counted.push(page);
        }
        Ok(())
    }

    /// Undoes one [`Self::acquire`] of `bytes`.
    fn release(&self, bytes: &[u8]) {
        let mut pages = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (page, _) in pages_of(bytes) {
            uncount(&mut pages, page);
        }
    }
}

/// One buffer fewer on `page`; the last one unlocks it.
fn uncount(pages: &mut BTreeMap<usize, PageLock>, page: usize) {
    if let Some(lock) = pages.get_mut(&page) {
        lock.buffers -= 1;
        if lock.buffers == 0 {
            pages.remove(&page);
        }
    }
}

/// The pages `bytes` lies on: each page's address, and a pointer to the first byte of `bytes`
/// on that page (what [`region::lock`] rounds down to the page). None for an empty slice.
fn pages_of(bytes: &[u8]) -> impl Iterator<Item = (usize, *const u8)> + '_ {
    let size = region::page::size();
    let start = bytes.as_ptr().addr();
    let end = start + bytes.len();
    let first = if bytes.is_empty() {
        end
    } else {
        start - start % size
    };
    (first..end)
        .step_by(size)
        .map(move |page| (page, bytes[page.saturating_sub(start)..].as_ptr()))
}

/// Logs the first refusal to lock, and only that one: the next token would be refused for
/// the same reason, and a warning per reload would teach nothing new.
fn warn_once(error: std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %error,
            "cannot lock the token's memory against swap (RLIMIT_MEMLOCK, see LimitMEMLOCK= or ulimit -l): it may be written to swap; not repeated for later tokens"
        );
    }
}

/// Whether every page of `bytes` is counted as locked (tests).
#[cfg(test)]
pub(crate) fn is_locked(bytes: &[u8]) -> bool {
    let pages = PAGES.0.lock().unwrap_or_else(PoisonError::into_inner);
    pages_of(bytes).all(|(page, _)| pages.contains_key(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page that lies wholly inside `buf` (no other buffer shares it) and its offset in it.
    fn own_page(buf: &[u8]) -> usize {
        let size = region::page::size();
        let start = buf.as_ptr().addr();
        (size - start % size) % size
    }

    #[test]
    fn a_page_stays_locked_while_any_buffer_on_it_lives() {
        let size = region::page::size();
        let buf = vec![7u8; 3 * size];
        let at = own_page(&buf);
        let (a, b) = (&buf[at..at + 10], &buf[at + 100..at + 110]);
        let locks = PageLocks::new();
        let count = |locks: &PageLocks| {
            let pages = locks.0.lock().unwrap();
            pages.get(&(a.as_ptr().addr())).map(|p| p.buffers)
        };
        locks.acquire(a).unwrap();
        locks.acquire(b).unwrap();
        assert_eq!(count(&locks), Some(2));
        locks.release(a);
        assert_eq!(count(&locks), Some(1), "b still lives on the page");
        locks.release(b);
        assert_eq!(count(&locks), None, "the last buffer unlocks the page");
    }

    #[test]
    fn a_buffer_across_a_page_boundary_locks_both_pages() {
        let size = region::page::size();
        let buf = vec![7u8; 4 * size];
        let at = own_page(&buf) + size - 5;
        let spanning = &buf[at..at + 10];
        assert_eq!(pages_of(spanning).count(), 2);
        let locks = PageLocks::new();
        locks.acquire(spanning).unwrap();
        assert_eq!(locks.0.lock().unwrap().len(), 2);
        locks.release(spanning);
        assert!(locks.0.lock().unwrap().is_empty());
        assert_eq!(pages_of(&buf[..0]).count(), 0);
    }

    #[test]
    fn concat_holds_the_parts_in_locked_pages() {
        let bytes = LockedBytes::concat(&[b"Bearer ", b"tok-123"]);
        assert_eq!(&*bytes, b"Bearer tok-123");
        // Root, or a process under RLIMIT_MEMLOCK (8 MiB by default), may lock a page.
        assert!(bytes.locked && is_locked(&bytes));
    }

    /// `secret.rs` relies on this: a header value made from these bytes, and its clones, use
    /// the locked buffer itself rather than a copy.
    #[test]
    fn a_header_value_keeps_the_locked_buffer() {
        let bytes = LockedBytes::concat(&[b"Bearer ", b"tok-123"]);
        let at = bytes.as_ptr();
        let value = http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(bytes)).unwrap();
        assert_eq!(value.as_bytes().as_ptr(), at);
        assert_eq!(value.clone().as_bytes().as_ptr(), at);
    }
}
