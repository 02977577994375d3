//! SQL quoting. Identifiers are always quoted: names with quotes, spaces, capitals or
//! unicode must survive every statement we build.

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on everywhere we
/// support).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_everything() {
        assert_eq!(super::qualified("My \"S\"", "t"), "\"My \"\"S\"\"\".\"t\"");
        assert_eq!(super::literal("it's"), "'it''s'");
    }
}
