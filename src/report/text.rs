//! Small text helpers shared by the report formats: Markdown table cells and
//! rows, CSV fields, and display names that fall back to the wire code.

use fieldlink_model::{Category, Protocol};

/// Escapes a value for a Markdown table cell: `\` and `|` are escaped so the
/// cell cannot end early, and line breaks become spaces so the row stays on
/// one line.
pub(super) fn md_cell(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One Markdown table row of already escaped cells, with its line break.
pub(super) fn md_row<S: AsRef<str>>(cells: &[S]) -> String {
    let mut out = String::from("|");
    for cell in cells {
        out.push(' ');
        out.push_str(cell.as_ref());
        out.push_str(" |");
    }
    out.push('\n');
    out
}

/// The header and delimiter rows of a Markdown table; columns whose flag in
/// `numeric` is set are right-aligned.
pub(super) fn md_header(titles: &[&str], numeric: &[bool]) -> String {
    let mut out = md_row(titles);
    let delimiters: Vec<&str> = titles
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if numeric.get(i).copied().unwrap_or(false) {
                "---:"
            } else {
                "---"
            }
        })
        .collect();
    out.push_str(&md_row(&delimiters));
    out
}

/// Appends one CSV field, quoted only when it holds a comma, quote or line
/// break (RFC 4180).
pub(super) fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// One CSV record with its line break.
pub(super) fn csv_row<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, field.as_ref());
    }
    out.push('\n');
    out
}

/// The form's name of a category code, or the code itself if this build
/// does not know it.
pub(super) fn category_name(code: &str) -> &str {
    code.parse::<Category>().map_or(code, |c| c.zh_name())
}

/// The display name of a protocol code, or the code itself if this build
/// does not know it (the registry may have newer drivers).
pub(super) fn protocol_name(code: &str) -> &str {
    code.parse::<Protocol>().map_or(code, |p| p.display_name())
}

/// `+08:00` → `UTC+08:00`.
pub(super) fn zone(timezone: &str) -> String {
    format!("UTC{timezone}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_escape_pipes_backslashes_and_line_breaks() {
        assert_eq!(md_cell("plain 名称"), "plain 名称");
        assert_eq!(md_cell("a|b"), "a\\|b");
        assert_eq!(md_cell("C:\\x|y"), "C:\\\\x\\|y");
        assert_eq!(md_cell("line 1\r\nline 2"), "line 1  line 2");
    }

    #[test]
    fn markdown_header_aligns_numeric_columns_right() {
        assert_eq!(
            md_header(&["名称", "数量"], &[false, true]),
            "| 名称 | 数量 |\n| --- | ---: |\n"
        );
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(
            csv_row(&["a", "b,c", "say \"hi\"", "x\ny", "采矿设备"]),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\",采矿设备\n"
        );
    }

    #[test]
    fn names_fall_back_to_the_code() {
        assert_eq!(category_name("agri-forestry"), "农林机械");
        assert_eq!(category_name("space-probes"), "space-probes");
        assert_eq!(protocol_name("opc-ua"), "OPC UA");
        assert_eq!(protocol_name("profinet"), "profinet");
    }
}
