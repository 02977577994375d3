//! Values passed to the target exactly as pgoutput sent them: text-format parameters, which
//! the target parses with the column type's own input function, so every type it knows
//! works without pgtransit knowing it.

use bytes::{Bytes, BytesMut};
use pgoutput::Value;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};

/// One parameter: the bytes pgoutput sent (shared, not copied), or NULL.
#[derive(Debug, Clone)]
pub struct TextValue(pub Option<Bytes>);

impl From<&Value> for TextValue {
    fn from(v: &Value) -> TextValue {
        match v {
            Value::Text(b) | Value::Binary(b) => TextValue(Some(b.clone())),
            Value::Null | Value::UnchangedToast => TextValue(None),
        }
    }
}

impl ToSql for TextValue {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}
