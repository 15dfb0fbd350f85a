//! Row types borrowed from the rows PostgreSQL sent, read by column name.
//!
//! sqlx's `#[derive(FromRow)]` finds each field's column by name and checks its
//! type on every row: a hash lookup and a type comparison per value, a quarter of
//! the instructions of a page of articles (docs/performance-notes.md). Every row of
//! a statement has the same columns, so a type declared with [`borrowed_row!`]
//! does both once per statement: `columns` finds each field's column by name and
//! checks its type on one row, and `read` then decodes any row of the same
//! statement at those positions.

/// Declares a struct whose fields are read from the columns of the same names,
/// with `columns(&row)` and `read(&row, &columns)` as described in the module.
macro_rules! borrowed_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident<$lt:lifetime> { $(pub $field:ident: $ty:ty,)+ }
    ) => {
        $(#[$meta])*
        pub struct $name<$lt> { $(pub $field: $ty,)+ }

        impl<$lt> $name<$lt> {
            /// The position of each field's column in `row`, in the order of the
            /// fields; an error if a column is missing or of another type.
            pub fn columns(row: &sqlx::postgres::PgRow) -> Result<Vec<usize>, sqlx::Error> {
                use sqlx::{Column as _, Row as _, TypeInfo as _};
                let position = |name: &str, compatible: fn(&sqlx::postgres::PgTypeInfo) -> bool, expected: &str| {
                    let column = row.try_column(name)?;
                    if compatible(column.type_info()) {
                        Ok(column.ordinal())
                    } else {
                        let found = column.type_info().name();
                        Err(sqlx::Error::ColumnDecode {
                            index: name.to_owned(),
                            source: format!("the column is {found}, the field {expected}").into(),
                        })
                    }
                };
                Ok(vec![$(position(
                    stringify!($field),
                    <$ty as sqlx::Type<sqlx::Postgres>>::compatible,
                    stringify!($ty),
                )?),+])
            }

            /// The values of `row` at `columns`, from [`Self::columns`] on a row
            /// of the same statement.
            pub fn read(row: &$lt sqlx::postgres::PgRow, columns: &[usize]) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                let mut at = columns.iter().copied();
                let mut next = || at.next().ok_or_else(|| sqlx::Error::Decode("fewer columns than fields".into()));
                Ok(Self { $($field: row.try_get_unchecked(next()?)?,)+ })
            }
        }
    };
}
pub(crate) use borrowed_row;
