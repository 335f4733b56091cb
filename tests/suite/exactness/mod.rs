//! Exactness under what Azure really sends: listing orders that are not byte order, small
//! pages, every blob type and property, late and repeated events, faults between the product
//! and the service: the proxy's own tests, one test per defect found by the
//! review that fed the product what Azure sends, and the randomized runs that check the class.

pub mod common;
mod defects;
mod proxy;
mod randomized;
mod review;
