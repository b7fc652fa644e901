//! A vector in fixed pages: growing it never copies what it holds, so a
//! table of 10 M entries never needs a second copy of itself in memory
//! (as a `Vec` does while it doubles), and memory follows the length.

/// Entries per page.
const PAGE: usize = 1 << 16;

/// A growable array of `T` in pages of [`PAGE`] entries.
#[derive(Debug, Clone)]
pub(crate) struct PagedVec<T> {
    pages: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for PagedVec<T> {
    fn default() -> Self {
        PagedVec {
            pages: Vec::new(),
            len: 0,
        }
    }
}

impl<T> PagedVec<T> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`.
    pub(crate) fn push(&mut self, value: T) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => page.push(value),
            _ => {
                let mut page = Vec::with_capacity(PAGE);
                page.push(value);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    /// The entry at `index`.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.pages.get(index / PAGE)?.get(index % PAGE)
    }

    /// The entry at `index`, to change.
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.pages.get_mut(index / PAGE)?.get_mut(index % PAGE)
    }

    /// Every entry, by index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.pages.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_index_across_pages() {
        let mut v = PagedVec::default();
        let n = 3 * PAGE + 7;
        for i in 0..n {
            v.push(i);
        }
        assert_eq!(v.len(), n);
        assert_eq!(v.get(PAGE), Some(&PAGE));
        assert_eq!(v.get(n - 1), Some(&(n - 1)));
        assert_eq!(v.get(n), None);
        *v.get_mut(5).unwrap() = 0;
        assert_eq!(v.iter().filter(|x| **x == 0).count(), 2);
        assert_eq!(v.iter().count(), n);
    }
}
