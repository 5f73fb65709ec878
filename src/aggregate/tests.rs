//! Tests of the aggregation core.
