# Cython declarations of csrc/faultkit/recover/journal.h: the contract, declarations only.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libcpp cimport bool
from libcpp.string cimport string

cdef extern from "faultkit/recover/journal.h" namespace "faultkit::journal" nogil:
    const size_t SEGMENT_HEADER_SIZE
    const size_t RECORD_HEADER_SIZE
    const uint32_t MAX_RECORD
    const uint16_t KIND_BYTES
    const uint16_t KIND_STATE
    const uint16_t KIND_SEAL
    const uint16_t VERSION_MAJOR
    const uint16_t VERSION_MINOR
    const int WOULD_ROTATE
    const int MODE_NEVER
    const int MODE_GROUP
    const int MODE_ALWAYS
    const int HEADER_OK
    const int HEADER_SHORT
    const int HEADER_MAGIC
    const int HEADER_VERSION
    const int HEADER_CHECKSUM
    const int NEXT_RECORD
    const int NEXT_SEAL
    const int NEXT_END
    const int NEXT_DAMAGED

    size_t frame_size(size_t length)

    cdef cppclass SegmentHeader:
        uint16_t major
        uint16_t minor
        uint64_t journal_id
        uint64_t first_lsn

    cdef cppclass Record:
        uint64_t lsn
        uint64_t durable
        uint32_t length
        uint16_t kind
        size_t payload
        size_t frame

    void write_segment_header(uint8_t* out, uint64_t journal_id, uint64_t first_lsn)
    int parse_segment_header(const uint8_t* p, size_t n, SegmentHeader* out)
    void frame_record(uint8_t* out, uint64_t seed, uint64_t lsn, uint64_t durable, uint16_t kind,
                      const uint8_t* data, uint32_t length)
    bool check_record(const uint8_t* buf, size_t length, size_t pos, uint64_t seed, Record* out)
    int next_record(const uint8_t* buf, size_t length, size_t pos, uint64_t seed, uint64_t expected,
                    Record* out, uint64_t* resume_lsn)

    cdef cppclass Writer:
        Writer()
        int open(const string& dir, uint64_t seed, int mode, uint64_t segment_bytes, uint64_t first_lsn,
                 uint64_t durable)
        int append(const uint8_t* data, uint32_t length, uint16_t kind, uint64_t* lsn, bool may_rotate)
        int append_many(const uint8_t* const* data, const uint32_t* lens, size_t n, uint16_t kind,
                        uint64_t* last)
        int wait_durable(uint64_t lsn)
        int sync()
        int close()
        int start_flusher()
        void request_sync()
        void add_notify_fd(int fd)
        void remove_notify_fd(int fd)
        uint64_t next_lsn()
        uint64_t durable_lsn()
        string segment_path()
        int mode()
        int error()
        uint64_t syncs()
        uint64_t appended_bytes()
