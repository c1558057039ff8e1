//! vidflow GPU runtime
