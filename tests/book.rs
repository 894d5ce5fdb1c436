//! The book's table of hook points is the hook schema's ([`tlens::cache_core::hook_point::markdown_table`]): this
//! test fails when they differ. `TLENS_BLESS=1 cargo test --test integration book::` rewrites the book's table from
//! the schema.

use std::path::PathBuf;

use tlens::cache_core::hook_point::markdown_table;

#[test]
fn hooks_chapter_table_comes_from_the_hook_schema() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("book/src/hooks.md");
    let text = std::fs::read_to_string(&path).unwrap();
    const HEADING: &str = "## Hook points\n\n";
    let start = text
        .find(HEADING)
        .expect("the hooks chapter has a Hook points section")
        + HEADING.len();
    let end = start
        + text[start..]
            .find("\n\n")
            .expect("a blank line after the table")
        + 1;
    let table = markdown_table();
    if std::env::var_os("TLENS_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &text[..start], &text[end..])).unwrap();
        return;
    }
    assert_eq!(
        &text[start..end],
        table,
        "book/src/hooks.md's table differs from the hook schema; run TLENS_BLESS=1 cargo test --test integration book::"
    );
}
