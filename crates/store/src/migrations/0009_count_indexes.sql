-- Counting what a partition grant admits (`Scoped::count`): a grant over region and customer type selects the
-- customers of one region and one type; with only the single-column indexes of 0001 the database reads every
-- customer of the region from the table to test the type (BENCHMARKS.md §2, the analyst's count at 1,000,000
-- customers). With all three partition dimensions in one index, a grant on region, on region and type, or on all
-- three is one index range, counted without reading the table.
CREATE INDEX customers_partition ON customers (org_id, region, customer_type, business_line)
