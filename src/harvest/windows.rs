//! Packing documents into fixed-length windows, as SAELens's `concat_and_batch_sequences` does.
//!
//! Documents are tokenized without BOS and concatenated. Every window starts with the begin token (the family's BOS,
//! when it prepends one); a document that starts inside a window is preceded by the separator (BOS, when the
//! tokenizer has one); neither is added where the document already starts with it. A document longer than what is
//! left of a window continues in the next window, which again starts with the begin token. The tokens after the last
//! full window are dropped.

/// Cuts a stream of documents into windows of `context` tokens.
#[derive(Debug, Clone)]
pub struct Packer {
    context: usize,
    begin: Option<u32>,
    separator: Option<u32>,
    window: Vec<u32>,
}

impl Packer {
    /// A packer of `context`-token windows (at least 2, so that a window with a begin token holds a document token).
    pub fn new(context: usize, begin: Option<u32>, separator: Option<u32>) -> Self {
        assert!(context >= 2, "a window holds at least 2 tokens");
        Self {
            context,
            begin,
            separator,
            window: Vec::with_capacity(context),
        }
    }

    /// Adds one document's tokens; `emit` receives each window this completes, in order.
    ///
    /// ```
    /// use tlens::harvest::windows::Packer;
    /// let (bos, mut windows) = (0, Vec::new());
    /// let mut packer = Packer::new(4, Some(bos), Some(bos));
    /// packer.push(&[1, 2], |w| windows.push(w));
    /// packer.push(&[3, 4, 5, 6, 7], |w| windows.push(w));
    /// assert_eq!(windows, [vec![0, 1, 2, 0], vec![0, 3, 4, 5]]); // [0, 6, 7] waits for more
    /// ```
    pub fn push(&mut self, doc: &[u32], mut emit: impl FnMut(Vec<u32>)) {
        let mut offset = 0;
        while offset < doc.len() {
            // A new window opens with the begin token, a document inside a window with the separator.
            let marker = if self.window.is_empty() {
                self.begin
            } else {
                self.separator
            };
            if let Some(marker) = marker
                && doc[offset] != marker
            {
                self.window.push(marker);
            }
            let take = (self.context - self.window.len()).min(doc.len() - offset);
            self.window.extend_from_slice(&doc[offset..offset + take]);
            offset += take;
            if self.window.len() == self.context {
                emit(std::mem::replace(
                    &mut self.window,
                    Vec::with_capacity(self.context),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(context: usize, marker: Option<u32>, docs: &[&[u32]]) -> Vec<Vec<u32>> {
        let mut packer = Packer::new(context, marker, marker);
        let mut out = Vec::new();
        for doc in docs {
            packer.push(doc, |w| out.push(w));
        }
        out
    }

    #[test]
    fn windows_begin_with_bos_and_documents_are_separated() {
        // SAELens with begin_batch_token_id = sequence_separator_token_id = BOS (0).
        assert_eq!(
            pack(5, Some(0), &[&[1, 2, 3], &[4, 5, 6, 7, 8, 9, 10]]),
            vec![vec![0, 1, 2, 3, 0], vec![0, 4, 5, 6, 7]]
        );
    }

    #[test]
    fn a_document_that_starts_with_the_marker_gets_no_second_one() {
        assert_eq!(
            pack(4, Some(0), &[&[0, 1, 2, 3, 4], &[0, 5]]),
            vec![vec![0, 1, 2, 3], vec![0, 4, 0, 5]]
        );
    }

    #[test]
    fn a_separator_can_fill_a_window() {
        // [0 1 2] + separator fills the window; the next document starts a new one.
        assert_eq!(
            pack(4, Some(0), &[&[1, 2], &[3, 4, 5]]),
            vec![vec![0, 1, 2, 0], vec![0, 3, 4, 5]]
        );
    }

    #[test]
    fn without_markers_the_stream_is_cut_plainly_and_empty_documents_add_nothing() {
        assert_eq!(
            pack(3, None, &[&[1, 2], &[], &[3, 4, 5, 6, 7]]),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
    }

    #[test]
    fn every_token_of_the_stream_lands_in_order() {
        let docs: Vec<Vec<u32>> = (0..50).map(|d| (1..=(d % 13)).collect()).collect();
        let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
        let windows = pack(7, None, &refs);
        let stream: Vec<u32> = docs.concat();
        assert_eq!(windows.concat(), stream[..windows.len() * 7]);
        assert!(stream.len() - windows.len() * 7 < 7);
    }
}
