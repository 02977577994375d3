//! Enums whose variants are written as text (in the task store, in JSON, in task files and
//! on the screen): [`named!`] defines the enum with one text per variant, and that one list
//! serves parsing, printing, serde and SQLite.

#[doc(hidden)]
pub use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// An enum with one text per variant, and everything that reads or writes that text.
macro_rules! named {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    $crate::Error::usage(format!("{s:?}: expected one of {}", all.join(", ")))
                })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl $crate::named::ToSql for $name {
            fn to_sql(&self) -> ::rusqlite::Result<$crate::named::ToSqlOutput<'_>> {
                Ok($crate::named::ToSqlOutput::from(self.as_str()))
            }
        }

        impl $crate::named::FromSql for $name {
            fn column_result(v: $crate::named::ValueRef<'_>) -> $crate::named::FromSqlResult<$name> {
                v.as_str()?.parse().map_err(|e: $crate::Error| $crate::named::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

pub(crate) use named;
