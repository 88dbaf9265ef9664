//! Vectors wecom-01..07 and wechat_mp-01..03 from `shared/vectors.json` (official samples and
//! wechatpy-computed values), plus properties: round trips and no panic on any input.

use proptest::prelude::*;

use super::*;

const DOC_TOKEN: &str = "QDG6eK";
const DOC_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const DOC_CORP: &str = "wx5823bf96d3bd56c7";
const OWN_TOKEN: &str = "botToken123";
const OWN_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const OWN_CORP: &str = "ww1234567890abcdef";

fn crypt(token: &str, key: &str, receive_id: &str) -> MsgCrypt {
    match MsgCrypt::new(token, key, receive_id) {
        Ok(crypt) => crypt,
        Err(error) => panic!("vector key rejected: {error}"),
    }
}

#[test]
fn wecom_01_key_iv_and_url_verification() {
    let key = aes_key(DOC_KEY).map(hex::encode);
    assert_eq!(
        key.as_deref(),
        Ok("8d69989bbaabe67328014c194631ad0719b3dca035b64023df292447aab60760")
    );
    let doc = crypt(DOC_TOKEN, DOC_KEY, DOC_CORP);
    assert_eq!(hex::encode(doc.iv()), "8d69989bbaabe67328014c194631ad07");
    let echostr =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    let opened = doc.open(
        "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
        "1409659589",
        "263014780",
        echostr,
    );
    assert_eq!(opened.as_deref(), Ok("1616140317555161061"));
}

#[test]
fn wecom_02_official_post_decrypts_to_the_sample_message() {
    let encrypt = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
    let doc = crypt(DOC_TOKEN, DOC_KEY, DOC_CORP);
    let opened = doc.open(
        "477715d11cdb4164915debcba66cb864d751f3e6",
        "1409659813",
        "1372623149",
        encrypt,
    );
    let expected = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";
    assert_eq!(opened.as_deref(), Ok(expected));
    // Same payload, another corp: the receive id check refuses it.
    let other = crypt(DOC_TOKEN, DOC_KEY, "ww-someone-else");
    assert_eq!(other.decrypt(encrypt), Err(CryptoError::ReceiveId));
}

#[test]
fn wecom_03_wechatpy_url_verification() {
    let crypt = crypt(
        "123456",
        "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
        "wx49f0ab532d5d035a",
    );
    let opened = crypt.open(
        "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
        "1411443780",
        "437374425",
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==",
    );
    assert_eq!(opened.as_deref(), Ok("5927782489442352469"));
}

#[test]
fn wecom_04_passive_reply_encryption_is_byte_identical() {
    let crypt = crypt(
        "123456",
        "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
        "wx49f0ab532d5d035a",
    );
    let plaintext = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
    let encrypt = crypt.encrypt_with_random(plaintext, b"1234567890123456");
    assert_eq!(
        encrypt,
        "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3"
    );
    assert_eq!(
        crypt.signature("1411525903", "461056294", &encrypt),
        "407518b7649e86ef23978113f92d27afa9296533"
    );
}

#[test]
fn wecom_05_app_message_encryption_signature_and_frame() {
    let own = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP);
    let plaintext = "<xml><ToUserName><![CDATA[ww1234567890abcdef]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[/campaign start 42]]></Content><MsgId>7300000000000000001</MsgId><AgentID>1000002</AgentID></xml>";
    let encrypt = own.encrypt_with_random(plaintext, b"abcdefghijklmnop");
    assert_eq!(
        encrypt,
        "8Q6sFaw1Cb9qj7RuhNb60r0pYKGkNWTR5QTN+eh1tNP69c/oMEeo56NS/pWzopi7GL0De48ZVmrekUl/G1/AgMObCxSxBaS4fu02pNAd62/G3IGJsevWvFpRJNaEcY79pjc9I5HSHiXtHYcQIz9PRWs0kYeRJOEnDpsiGTON/qVwTbeRi8csOSKapQq5wwiA9P+1+bL0Qvuqfg+2nlXTSmwYSlKlPp/wjb0be55Dp7NjBcQmMLJOJkIdnwcq+5XnqMWSsxLd3tSzCMzznL0dP27juAK6yL2gKyG+la5KMWPjg/jGrkjx3QaRDDmW2NK+fuWrk2NaCvv61UW2qKFiP2nAJXDDKbyhR/6G0Y0XfNRrwPPs1dDuO92lxWkQ2zwxczoBcEe7fNw40KkDnBOESKoT28fb9rpp05jiEEo5Fcc5npYvhp7n/ZQsiaFvGrTsD/x0XZh6qLnDyYssA0An0g=="
    );
    assert_eq!(
        own.signature("1700000000", "987654321", &encrypt),
        "74c8121c9a48046fe3e7a21d4d0d5e3e0f747f4f"
    );
    // The padded frame itself: decrypt raw blocks and compare with the vector's hex.
    let mut buffer = CANONICAL.decode(&encrypt).unwrap_or_default();
    let raw = Decryptor::new(&own.key.into(), &own.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buffer)
        .map(hex::encode)
        .unwrap_or_default();
    assert!(raw.starts_with("6162636465666768696a6b6c6d6e6f70000001263c786d6c3e"));
    assert!(raw.ends_with(&"14".repeat(20)));
    assert_eq!(own.decrypt(&encrypt).as_deref(), Ok(plaintext));
}

#[test]
fn wecom_06_full_32_byte_pad_block_is_accepted() {
    let own = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP);
    let expected = "8Q6sFaw1Cb9qj7RuhNb60g6dZkqpItOQq5TQ828tscN5yPra9swAXref16Pd3upQoBE3IiiJe+/a+QROCpFrwJ4imN1Rwf8/iCTob0ePzaJIq4EvJXmmSMsuZvw858Ae";
    let encrypt = own.encrypt_with_random("xxxxxxxxxxxxxxxxxxxxxxxxxx", b"abcdefghijklmnop");
    assert_eq!(encrypt, expected);
    assert_eq!(CANONICAL.decode(expected).map(|c| c.len()), Ok(96));
    assert_eq!(
        own.signature("1700000001", "1", expected),
        "5ca36b2ab88aa7573b4ce27fcfd8287fbf24fc18"
    );
    let opened = own.open(
        "5ca36b2ab88aa7573b4ce27fcfd8287fbf24fc18",
        "1700000001",
        "1",
        expected,
    );
    assert_eq!(opened.as_deref(), Ok("xxxxxxxxxxxxxxxxxxxxxxxxxx"));
}

#[test]
fn wecom_07_aibot_callback_with_empty_receive_id() {
    let aibot = crypt(OWN_TOKEN, OWN_KEY, "");
    let plaintext = "{\"msgid\":\"CAIQ16HMjQYY\\\\/NGagIOAgAMgq4KM0AI=\",\"aibotid\":\"AIBOTID\",\"chatid\":\"wrkSFfCgAAxxxx\",\"chattype\":\"group\",\"from\":{\"userid\":\"zhangsan\"},\"response_url\":\"https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RESPONSECODE\",\"msgtype\":\"text\",\"text\":{\"content\":\"@RobotA /campaign status\"}}";
    let expected = "8Q6sFaw1Cb9qj7RuhNb60lizb/JEu0WtU2VC6ufCpd6HNgaU6ffyMCz/V2GMom7JnZLi6MT7dhH4Bfxl5GHlAOTah0H2JeKVFKHv9Tz8WgOmg6Z2H2ZYifZ56ZHV9iUQQxJzWtlZdNtdmkLrxeXMl5hxKuPiFWyyYfnutYX1BevCKo9SKZ9H4ofywFmUeRdooeXThX5cfttHQ35PiQupmCK5maZHsi3mIqtlKuPvallqEl9JcQ1HJwqliM/TrVb12ZQ6vkcDCA+lHv5o62AMZOZC0SwYgQ8krcEOJXVA55LsBzpl9BGmZrDLB1wL2rRm1sVGlDT2ynEi2cX5oCXOG/DLB6aKY/gJwd0/098IsboVJyoKtDEeeKRtjBanygYVBb1OuUU/DDuiYVW6316QmISOaTqL3slmoNaTLsc91CE=";
    assert_eq!(
        aibot.encrypt_with_random(plaintext, b"abcdefghijklmnop"),
        expected
    );
    let opened = aibot.open(
        "2075b353101fac71e959c7e4979edbd814eb772c",
        "1700000002",
        "1372623149",
        expected,
    );
    assert_eq!(opened.as_deref(), Ok(plaintext));
    // An app account (receive id = corp id) must not accept the robot's payload.
    let app = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP);
    assert_eq!(app.decrypt(expected), Err(CryptoError::ReceiveId));
}

#[test]
fn wechat_mp_01_02_plain_signatures() {
    assert_eq!(
        sorted_sha1(&["test", "1410685589", "test"]),
        "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff"
    );
    let values = ["mpToken", "1700000000", "5555"];
    assert_eq!(
        verify_sorted_sha1(&values, "7d9bc3ce0e5e04a2b09574db5991dcfcab00c537"),
        Ok(())
    );
    assert_eq!(
        verify_sorted_sha1(&values, "7d9bc3ce0e5e04a2b09574db5991dcfcab00c538"),
        Err(CryptoError::Signature)
    );
}

#[test]
fn wechat_mp_03_safe_mode_encryption() {
    let mp = crypt("mpToken", OWN_KEY, "wx0123456789abcdef");
    let plaintext = "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oUser_openid_0001]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><MsgId>24000000000000001</MsgId></xml>";
    let expected = "ECb94sC68hxnidW1ycQhszknagQMaMzubdLzoyqpzHppRw1lf+W4UVBIZza/p/lsZzH+38aHjVT6oIHmkjMnzo3ydHl3bsMykNN5Xgvy3WcYXG7HpaABX+CgWDnmcLM9h3bo6O55iGlGhzr11gZIuKrForfuxaP7W1cQUCeEGtdHePB6Rh1FFYPM/53lJhH5k2EpB/8Ep2phamJRcJYbZhGuGVPkMdkBkMz1WaMhQoyMhbiBc/eXDptKNFHN/lP9aHmhBk1+rL7X9R4hmM3beYwBguqIr0lSLdVy9ULxmB7fK6M8DMROGvwRrSmR0/pqASRCTGsjnhlR1Q9pLf0FdgVocJcNpb6biUIfUcIUa2dw8yxWcrf8gW9WrRDZ+MWRYBQ2VsP3Cx63vUVmZ7QGMdsuyIh5vuUTvsBxK+lrbrM=";
    assert_eq!(
        mp.encrypt_with_random(plaintext, b"ABCDEFGHIJKLMNOP"),
        expected
    );
    let opened = mp.open(
        "5327b6b7acccaac1973bb45b8587b32532e2dc35",
        "1700000000",
        "5555",
        expected,
    );
    assert_eq!(opened.as_deref(), Ok(plaintext));
}

#[test]
fn bad_keys_are_refused_with_an_actionable_error() {
    for key in [
        "",
        "short",
        &format!("{OWN_KEY}H"),
        &OWN_KEY.replace('a', "+"),
    ] {
        assert_eq!(aes_key(key), Err(CryptoError::Key), "{key:?}");
    }
}

#[test]
fn a_tampered_payload_fails_the_signature_before_decryption() {
    let own = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP);
    let encrypt = own.encrypt_with_random("hello", b"abcdefghijklmnop");
    let signature = own.signature("1700000000", "1", &encrypt);
    let tampered = format!("A{}", &encrypt[1..]);
    assert_eq!(
        own.open(&signature, "1700000000", "1", &tampered),
        Err(CryptoError::Signature)
    );
    assert_eq!(
        own.open(&signature, "1700000001", "1", &encrypt),
        Err(CryptoError::Signature)
    );
    assert_eq!(
        own.open(&signature.to_uppercase(), "1700000000", "1", &encrypt)
            .as_deref(),
        Ok("hello")
    );
}

#[test]
fn inconsistent_padding_and_short_frames_are_refused() {
    let own = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP);
    let seal = |plain: &[u8]| {
        let mut buffer = plain.to_vec();
        let total = buffer.len();
        let sealed = Encryptor::new(&own.key.into(), &own.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buffer, total)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        CANONICAL.encode(sealed)
    };
    // Pad value 33 (over the block), 0, and a pad run that disagrees with its last byte.
    assert_eq!(own.decrypt(&seal(&[33u8; 64])), Err(CryptoError::Padding));
    assert_eq!(own.decrypt(&seal(&[0u8; 32])), Err(CryptoError::Padding));
    let mut mixed = [4u8; 32];
    mixed[29] = 5;
    assert_eq!(own.decrypt(&seal(&mixed)), Err(CryptoError::Padding));
    // Valid padding, but the declared length runs past the end.
    let mut frame = [b'r'; 32];
    frame[16..20].copy_from_slice(&1000u32.to_be_bytes());
    frame[31] = 1;
    assert_eq!(own.decrypt(&seal(&frame)), Err(CryptoError::Truncated));
    assert_eq!(own.decrypt("not base64!"), Err(CryptoError::Base64));
    assert_eq!(own.decrypt("AAAA"), Err(CryptoError::BlockLength));
}

proptest! {
    #[test]
    fn encrypt_then_decrypt_round_trips(msg in ".{0,300}", receive_id in "[a-z0-9]{0,20}", random in any::<[u8; 16]>()) {
        let crypt = crypt(OWN_TOKEN, OWN_KEY, &receive_id);
        let encrypt = crypt.encrypt_with_random(&msg, &random);
        let signature = crypt.signature("1700000000", "42", &encrypt);
        prop_assert_eq!(crypt.open(&signature, "1700000000", "42", &encrypt), Ok(msg));
    }

    #[test]
    fn decrypt_never_panics_on_any_text(text in ".{0,400}") {
        let _ = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP).decrypt(&text);
    }

    #[test]
    fn decrypt_never_panics_on_any_ciphertext(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP).decrypt(&CANONICAL.encode(bytes));
    }

    #[test]
    fn verification_never_panics(signature in ".{0,60}", timestamp in ".{0,20}", nonce in ".{0,20}", encrypt in ".{0,80}") {
        let crypt = crypt(OWN_TOKEN, OWN_KEY, OWN_CORP);
        let _ = crypt.open(&signature, &timestamp, &nonce, &encrypt);
    }

    #[test]
    fn key_parsing_never_panics(key in ".{0,60}") {
        let _ = aes_key(&key);
    }
}
