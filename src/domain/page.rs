//! Paging of listings: `page` and `perPage` as the REST API names them.

use super::FieldViolation;

/// A validated page request: 1-based page number and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub page: u32,
    pub per_page: u32,
}

impl Paging {
    pub const DEFAULT_PER_PAGE: u32 = 20;
    pub const MAX_PER_PAGE: u32 = 100;
    /// Far past any real listing; keeps `offset` arithmetic trivially safe.
    pub const MAX_PAGE: u32 = 10_000_000;

    /// `None` means "not given": page 1, 20 per page.
    pub fn parse(page: Option<i64>, per_page: Option<i64>) -> Result<Paging, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let page = match page {
            None => 1,
            Some(n) if (1..=i64::from(Self::MAX_PAGE)).contains(&n) => n as u32,
            Some(n) => {
                violations.push(FieldViolation::new(
                    "page",
                    format!(
                        "must be a whole number from 1 to {}, got {n}",
                        Self::MAX_PAGE
                    ),
                ));
                1
            }
        };
        let per_page = match per_page {
            None => Self::DEFAULT_PER_PAGE,
            Some(n) if (1..=i64::from(Self::MAX_PER_PAGE)).contains(&n) => n as u32,
            Some(n) => {
                violations.push(FieldViolation::new(
                    "perPage",
                    format!(
                        "must be a whole number from 1 to {}, got {n}",
                        Self::MAX_PER_PAGE
                    ),
                ));
                Self::DEFAULT_PER_PAGE
            }
        };
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Paging { page, per_page })
    }

    /// How many items come before this page.
    pub fn offset(&self) -> usize {
        (self.page as usize - 1) * self.per_page as usize
    }

    /// The number of the last page for `total` items: at least 1.
    pub fn last_page(&self, total: usize) -> u32 {
        let pages = total.div_ceil(self.per_page as usize).max(1);
        u32::try_from(pages).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            Paging::parse(None, None).unwrap(),
            Paging {
                page: 1,
                per_page: 20
            }
        );
        let fields = |r: Result<Paging, Vec<FieldViolation>>| {
            r.unwrap_err()
                .into_iter()
                .map(|v| v.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(Paging::parse(Some(0), Some(101))),
            ["page", "perPage"]
        );
        assert_eq!(fields(Paging::parse(Some(-1), None)), ["page"]);
        assert_eq!(fields(Paging::parse(None, Some(0))), ["perPage"]);
        assert!(Paging::parse(Some(3), Some(100)).is_ok());
    }

    #[test]
    fn offsets_and_last_pages() {
        let paging = Paging {
            page: 3,
            per_page: 20,
        };
        assert_eq!(paging.offset(), 40);
        assert_eq!(paging.last_page(0), 1);
        assert_eq!(paging.last_page(20), 1);
        assert_eq!(paging.last_page(21), 2);
        assert_eq!(paging.last_page(90), 5);
    }

    mod properties {
        use super::*;
        use proptest::option;
        use proptest::prelude::*;

        fn number() -> impl Strategy<Value = Option<i64>> {
            option::of(prop_oneof![
                -3i64..=130,
                any::<i64>(),
                9_999_990i64..=10_000_010
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn paging_is_in_range_or_names_its_field(
                page in number(),
                per_page in number(),
                total in any::<usize>(),
            ) {
                let page_ok = page.is_none_or(|n| (1..=i64::from(Paging::MAX_PAGE)).contains(&n));
                let per_page_ok =
                    per_page.is_none_or(|n| (1..=i64::from(Paging::MAX_PER_PAGE)).contains(&n));
                match Paging::parse(page, per_page) {
                    Ok(paging) => {
                        prop_assert!(page_ok && per_page_ok);
                        prop_assert_eq!(i64::from(paging.page), page.unwrap_or(1));
                        prop_assert_eq!(i64::from(paging.per_page), per_page.unwrap_or(20));
                        // Neither overflows, whatever the total.
                        let _ = paging.offset();
                        prop_assert!(paging.last_page(total) >= 1);
                    }
                    Err(violations) => {
                        let fields: Vec<&str> =
                            violations.iter().map(|v| v.field.as_str()).collect();
                        let mut expected = Vec::new();
                        if !page_ok {
                            expected.push("page");
                        }
                        if !per_page_ok {
                            expected.push("perPage");
                        }
                        prop_assert_eq!(fields, expected);
                    }
                }
            }
        }
    }
}
