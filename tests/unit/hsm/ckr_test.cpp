// The CKR table (ckr.hpp), pinned down code by code: a change to any mapping
// must show up here as a deliberate edit.
#include "xks/hsm/ckr.hpp"
#include "xks/hsm/ckr_names.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace xks::hsm {
namespace {

struct Row {
  CK_RV rv;
  const char* name;
  CkrClass cls;
  ErrorName error;
};

// Every CKR_* code of the PKCS#11 2.40 header (p11-kit), except vendor codes.
constexpr Row kTable[] = {
    {CKR_OK, "CKR_OK", CkrClass::Ok, ErrorName::InternalException},
    {CKR_CANCEL, "CKR_CANCEL", CkrClass::Device, ErrorName::DependencyTimeoutException},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY", CkrClass::Device, ErrorName::InternalException},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID", CkrClass::Device, ErrorName::InternalException},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR", CkrClass::Device, ErrorName::InternalException},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED", CkrClass::Device, ErrorName::InternalException},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD", CkrClass::Other, ErrorName::InternalException},
    {CKR_NO_EVENT, "CKR_NO_EVENT", CkrClass::Other, ErrorName::InternalException},
    {CKR_NEED_TO_CREATE_THREADS, "CKR_NEED_TO_CREATE_THREADS", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_CANT_LOCK, "CKR_CANT_LOCK", CkrClass::Other, ErrorName::InternalException},
    {CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE", CkrClass::Data,
     ErrorName::InternalException},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID", CkrClass::Data,
     ErrorName::InternalException},
    {CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_ACTION_PROHIBITED, "CKR_ACTION_PROHIBITED", CkrClass::Other, ErrorName::InternalException},
    {CKR_DATA_INVALID, "CKR_DATA_INVALID", CkrClass::Data, ErrorName::ValidationException},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE", CkrClass::Data,
     ErrorName::UnsupportedOperationException},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR", CkrClass::Device, ErrorName::InternalException},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY", CkrClass::Device, ErrorName::InternalException},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED", CkrClass::Device, ErrorName::InternalException},
    {CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID", CkrClass::Data,
     ErrorName::InvalidCiphertextException},
    {CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE", CkrClass::Data,
     ErrorName::InvalidCiphertextException},
    {CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED", CkrClass::Device,
     ErrorName::DependencyTimeoutException},
    {CKR_FUNCTION_NOT_PARALLEL, "CKR_FUNCTION_NOT_PARALLEL", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID", CkrClass::Data,
     ErrorName::KeyNotFoundException},
    {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE", CkrClass::Data, ErrorName::InvalidKeyUsageException},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT", CkrClass::Data,
     ErrorName::InvalidKeyUsageException},
    {CKR_KEY_NOT_NEEDED, "CKR_KEY_NOT_NEEDED", CkrClass::Data, ErrorName::InternalException},
    {CKR_KEY_CHANGED, "CKR_KEY_CHANGED", CkrClass::Data, ErrorName::InternalException},
    {CKR_KEY_NEEDED, "CKR_KEY_NEEDED", CkrClass::Data, ErrorName::InternalException},
    {CKR_KEY_INDIGESTIBLE, "CKR_KEY_INDIGESTIBLE", CkrClass::Data,
     ErrorName::InvalidKeyUsageException},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED", CkrClass::Data,
     ErrorName::InvalidKeyUsageException},
    {CKR_KEY_NOT_WRAPPABLE, "CKR_KEY_NOT_WRAPPABLE", CkrClass::Other, ErrorName::InternalException},
    {CKR_KEY_UNEXTRACTABLE, "CKR_KEY_UNEXTRACTABLE", CkrClass::Other, ErrorName::InternalException},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID", CkrClass::Other, ErrorName::InternalException},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID", CkrClass::Data,
     ErrorName::KeyNotFoundException},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE", CkrClass::Session, ErrorName::InternalException},
    {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED", CkrClass::Session,
     ErrorName::InternalException},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT", CkrClass::Pin, ErrorName::InternalException},
    {CKR_PIN_INVALID, "CKR_PIN_INVALID", CkrClass::Pin, ErrorName::InternalException},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE", CkrClass::Pin, ErrorName::InternalException},
    {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED", CkrClass::Pin, ErrorName::InternalException},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED", CkrClass::Pin, ErrorName::InternalException},
    {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED", CkrClass::Session, ErrorName::InternalException},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT", CkrClass::Device, ErrorName::InternalException},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID", CkrClass::Session,
     ErrorName::InternalException},
    {CKR_SESSION_PARALLEL_NOT_SUPPORTED, "CKR_SESSION_PARALLEL_NOT_SUPPORTED", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY", CkrClass::Other, ErrorName::InternalException},
    {CKR_SESSION_EXISTS, "CKR_SESSION_EXISTS", CkrClass::Other, ErrorName::InternalException},
    {CKR_SESSION_READ_ONLY_EXISTS, "CKR_SESSION_READ_ONLY_EXISTS", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_SESSION_READ_WRITE_SO_EXISTS, "CKR_SESSION_READ_WRITE_SO_EXISTS", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID", CkrClass::Data, ErrorName::InternalException},
    {CKR_SIGNATURE_LEN_RANGE, "CKR_SIGNATURE_LEN_RANGE", CkrClass::Data,
     ErrorName::InternalException},
    {CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT", CkrClass::Device,
     ErrorName::InternalException},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED", CkrClass::Device,
     ErrorName::InternalException},
    {CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_UNWRAPPING_KEY_HANDLE_INVALID, "CKR_UNWRAPPING_KEY_HANDLE_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_UNWRAPPING_KEY_SIZE_RANGE, "CKR_UNWRAPPING_KEY_SIZE_RANGE", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN", CkrClass::Session,
     ErrorName::InternalException},
    {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED", CkrClass::Pin,
     ErrorName::InternalException},
    {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID", CkrClass::Other, ErrorName::InternalException},
    {CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_USER_TOO_MANY_TYPES, "CKR_USER_TOO_MANY_TYPES", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_WRAPPED_KEY_INVALID, "CKR_WRAPPED_KEY_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_WRAPPED_KEY_LEN_RANGE, "CKR_WRAPPED_KEY_LEN_RANGE", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_WRAPPING_KEY_HANDLE_INVALID, "CKR_WRAPPING_KEY_HANDLE_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_WRAPPING_KEY_SIZE_RANGE, "CKR_WRAPPING_KEY_SIZE_RANGE", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_WRAPPING_KEY_TYPE_INCONSISTENT, "CKR_WRAPPING_KEY_TYPE_INCONSISTENT", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_RANDOM_SEED_NOT_SUPPORTED, "CKR_RANDOM_SEED_NOT_SUPPORTED", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_RANDOM_NO_RNG, "CKR_RANDOM_NO_RNG", CkrClass::Device, ErrorName::InternalException},
    {CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL", CkrClass::Data, ErrorName::InternalException},
    {CKR_SAVED_STATE_INVALID, "CKR_SAVED_STATE_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_INFORMATION_SENSITIVE, "CKR_INFORMATION_SENSITIVE", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_STATE_UNSAVEABLE, "CKR_STATE_UNSAVEABLE", CkrClass::Other, ErrorName::InternalException},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED", CkrClass::Device,
     ErrorName::InternalException},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_MUTEX_BAD, "CKR_MUTEX_BAD", CkrClass::Other, ErrorName::InternalException},
    {CKR_MUTEX_NOT_LOCKED, "CKR_MUTEX_NOT_LOCKED", CkrClass::Other, ErrorName::InternalException},
    {CKR_NEW_PIN_MODE, "CKR_NEW_PIN_MODE", CkrClass::Other, ErrorName::InternalException},
    {CKR_NEXT_OTP, "CKR_NEXT_OTP", CkrClass::Other, ErrorName::InternalException},
    {CKR_EXCEEDED_MAX_ITERATIONS, "CKR_EXCEEDED_MAX_ITERATIONS", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_FIPS_SELF_TEST_FAILED, "CKR_FIPS_SELF_TEST_FAILED", CkrClass::Device,
     ErrorName::InternalException},
    {CKR_LIBRARY_LOAD_FAILED, "CKR_LIBRARY_LOAD_FAILED", CkrClass::Device,
     ErrorName::InternalException},
    {CKR_PIN_TOO_WEAK, "CKR_PIN_TOO_WEAK", CkrClass::Other, ErrorName::InternalException},
    {CKR_PUBLIC_KEY_INVALID, "CKR_PUBLIC_KEY_INVALID", CkrClass::Other,
     ErrorName::InternalException},
    {CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED", CkrClass::Other, ErrorName::InternalException},
};

TEST(Ckr, TableIsExhaustiveAndNamesAreExact) {
  std::set<CK_RV> seen;
  for (const Row& row : kTable) {
    SCOPED_TRACE(row.name);
    EXPECT_TRUE(seen.insert(row.rv).second) << "duplicate code";
    EXPECT_EQ(ckr_name(row.rv), row.name);
    EXPECT_EQ(ckr_class(row.rv), row.cls);
    EXPECT_EQ(ckr_error_name(row.rv), row.error);
  }
  EXPECT_EQ(seen.size(), 94u);
}

TEST(Ckr, EveryCodeUpToTheVendorRangeIsNamedOrUnknown) {
  std::set<CK_RV> known;
  for (const Row& row : kTable) known.insert(row.rv);
  for (CK_RV rv = 0; rv < 0x1000; ++rv) {
    if (known.count(rv) == 0) {
      EXPECT_EQ(ckr_name(rv), "CKR_UNKNOWN") << rv;
      EXPECT_EQ(ckr_class(rv), CkrClass::Other) << rv;
      EXPECT_EQ(ckr_error_name(rv), ErrorName::InternalException) << rv;
    }
  }
}

TEST(Ckr, VendorCodes) {
  for (CK_RV rv : {CKR_VENDOR_DEFINED, CKR_VENDOR_DEFINED | 0x1234UL}) {
    EXPECT_EQ(ckr_name(rv), "CKR_VENDOR_DEFINED");
    EXPECT_EQ(ckr_class(rv), CkrClass::Other);
    EXPECT_EQ(ckr_error_name(rv), ErrorName::InternalException);
  }
}

TEST(Ckr, TheBriefsExamples) {
  EXPECT_EQ(ckr_error_name(CKR_ENCRYPTED_DATA_INVALID), ErrorName::InvalidCiphertextException);
  EXPECT_EQ(ckr_error_name(CKR_ENCRYPTED_DATA_LEN_RANGE), ErrorName::InvalidCiphertextException);
  EXPECT_EQ(ckr_error_name(CKR_KEY_FUNCTION_NOT_PERMITTED), ErrorName::InvalidKeyUsageException);
  EXPECT_EQ(ckr_error_name(CKR_KEY_TYPE_INCONSISTENT), ErrorName::InvalidKeyUsageException);
  EXPECT_EQ(ckr_error_name(CKR_OBJECT_HANDLE_INVALID), ErrorName::KeyNotFoundException);
  EXPECT_EQ(ckr_error_name(CKR_KEY_HANDLE_INVALID), ErrorName::KeyNotFoundException);
  for (CK_RV rv : {CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
                   CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_SESSION_COUNT,
                   CKR_SESSION_READ_ONLY, CKR_USER_NOT_LOGGED_IN, CKR_PIN_INCORRECT}) {
    EXPECT_EQ(ckr_error_name(rv), ErrorName::InternalException) << ckr_name(rv);
  }
  for (CK_RV rv : {CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_PIN_EXPIRED, CKR_PIN_LEN_RANGE}) {
    EXPECT_EQ(ckr_class(rv), CkrClass::Pin) << ckr_name(rv);
  }
  for (CK_RV rv : {CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN}) {
    EXPECT_EQ(ckr_class(rv), CkrClass::Session) << ckr_name(rv);
  }
}

TEST(Ckr, NamesRoundTripThroughTheTable) {
  for (const Row& row : kTable) {
    EXPECT_EQ(ckr_from_name(row.name), std::optional<CK_RV>{row.rv}) << row.name;
  }
  EXPECT_FALSE(ckr_from_name("CKR_NO_SUCH_CODE"));
  EXPECT_FALSE(ckr_from_name("ckr_general_error"));
}

TEST(Ckr, ErrorCarriesTheCodeOnlyInTheDetail) {
  Error e = ckr_to_error(CKR_DEVICE_ERROR, "C_Encrypt with key 'k1'");
  EXPECT_EQ(e.name, ErrorName::InternalException);
  EXPECT_EQ(e.message, "The HSM failed the operation: C_Encrypt with key 'k1'");
  // The context is said once: in the message, not again in the detail.
  EXPECT_EQ(e.detail, "CKR_DEVICE_ERROR (0x30), class device");
  EXPECT_EQ(e.message.find("CKR_"), std::string::npos);

  e = ckr_to_error(CKR_KEY_FUNCTION_NOT_PERMITTED, "");
  EXPECT_EQ(e.name, ErrorName::InvalidKeyUsageException);
  EXPECT_EQ(e.detail, "CKR_KEY_FUNCTION_NOT_PERMITTED (0x68), class data");
  // Client messages must pass sanitize_error_message unchanged.
  for (const Row& row : kTable) {
    Error x = ckr_to_error(row.rv, "ctx");
    EXPECT_EQ(sanitize_error_message(x.message), x.message) << row.name;
    EXPECT_EQ(x.name, row.error);
  }
}

TEST(Ckr, ClassNames) {
  EXPECT_EQ(to_string(CkrClass::Ok), "ok");
  EXPECT_EQ(to_string(CkrClass::Data), "data");
  EXPECT_EQ(to_string(CkrClass::Session), "session");
  EXPECT_EQ(to_string(CkrClass::Device), "device");
  EXPECT_EQ(to_string(CkrClass::Pin), "pin");
  EXPECT_EQ(to_string(CkrClass::Other), "other");
}

}  // namespace
}  // namespace xks::hsm
