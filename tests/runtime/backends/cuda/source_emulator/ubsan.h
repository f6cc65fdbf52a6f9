// UBSan handlers that end the launch with the check's name and source line (runtime.h).
#pragma once

#include "scheduler.h"

// ---- UBSan handlers (build.py compiles with -fsanitize=... and links no sanitizer runtime) ----
namespace emu {
struct SourceLocation {
    const char* file;
    u32 line, column;
};
inline void ub(const char* what, const void* data) {
    const auto* loc = static_cast<const SourceLocation*>(data);
    char b[512];
    std::snprintf(b, sizeof b, "%s at %s:%u:%u", what, loc->file, loc->line, loc->column);
    fail(b);
}
}  // namespace emu
#define EMU_UB(name, what) \
    extern "C" void name(void* data, uintptr_t, uintptr_t) { emu::ub(what, data); }
EMU_UB(__ubsan_handle_type_mismatch_v1, "misaligned or null access")
EMU_UB(__ubsan_handle_out_of_bounds, "index out of bounds of a fixed-size array")
EMU_UB(__ubsan_handle_add_overflow, "signed integer overflow in +")
EMU_UB(__ubsan_handle_sub_overflow, "signed integer overflow in -")
EMU_UB(__ubsan_handle_mul_overflow, "signed integer overflow in *")
EMU_UB(__ubsan_handle_negate_overflow, "signed integer overflow in unary -")
EMU_UB(__ubsan_handle_divrem_overflow, "integer division by zero or overflow")
EMU_UB(__ubsan_handle_shift_out_of_bounds, "shift out of bounds")
EMU_UB(__ubsan_handle_pointer_overflow, "pointer arithmetic overflow")
EMU_UB(__ubsan_handle_builtin_unreachable, "__builtin_unreachable reached")
EMU_UB(__ubsan_handle_vla_bound_not_positive, "variable-length array bound not positive")
EMU_UB(__ubsan_handle_load_invalid_value, "load of an invalid bool or enum value")

