"""English vocabulary of the simulated ad marketplace (pure data, no randomness).

Each `Subtopic` is a hidden product niche inside a category. Its phrase lists are synonyms and
paraphrases, so two ads of one subtopic can share few words yet mean the same thing; the five
subtopics of a category are related but clearly different. `marketplace` fills the
templates from these lists.

Template placeholders: titles and descriptions take `{brand} {noun} {attr} {attr2} {benefit}
{price}` (`price` is preformatted text such as "$49", see `format_price`); the query templates
live in `query_vocabulary`. Templates avoid articles and verb agreement, so singular and plural
nouns both read well. Phrases are lowercase; only brand names and template words are capitalised.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subtopic:
    """A hidden product niche; `key` never appears in generated text."""

    key: str  # "category/name"
    category: str
    nouns: tuple[str, ...]  # synonymous product phrases
    attributes: tuple[str, ...]  # adjectives and features that precede a noun
    benefits: tuple[str, ...]  # use / benefit phrases that follow a noun
    keywords: tuple[str, ...]  # short search phrases
    price_range: tuple[float, float]  # plausible USD price (low, high)


def _split(phrases: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in phrases.split(";"))


def _sub(
    key: str, price: tuple[float, float], nouns: str, attrs: str, benefits: str, keywords: str
) -> Subtopic:
    return Subtopic(
        key=key,
        category=key.split("/")[0],
        nouns=_split(nouns),
        attributes=_split(attrs),
        benefits=_split(benefits),
        keywords=_split(keywords),
        price_range=(float(price[0]), float(price[1])),
    )


SUBTOPICS: tuple[Subtopic, ...] = (
    # sports
    _sub(
        "sports/running_shoes",
        (45.0, 220.0),
        "running shoes; jogging sneakers; road runners; trainers for running; racing flats; "
        "marathon shoes",
        "lightweight; cushioned; breathable mesh; responsive foam; neutral support; carbon-plated; "
        "grippy",
        "for marathon training; made for your daily jog; built to go the distance; "
        "ready for race day; gentle on your knees over long miles; for faster 5k times",
        "jogging shoes; 5k race footwear; marathon trainers; shoes for runners; "
        "cushioned running sneakers; road running footwear; best shoes for jogging; "
        "lightweight racers; half marathon shoes",
    ),
    _sub(
        "sports/yoga_mats",
        (18.0, 140.0),
        "yoga mat; exercise mat for yoga; pilates mat; non-slip practice mat; meditation mat; "
        "yoga rug",
        "non-slip; extra thick; eco-friendly cork; natural rubber; foldable; sweat-resistant; "
        "cushioned",
        "for hot yoga sessions; made for your morning flow; for steady balance in every pose; "
        "to practice at home or in the studio; for stretching and pilates; for mindful practice",
        "yoga mat; non slip mat; thick exercise mat; cork yoga mat; travel yoga mat; hot yoga mat; "
        "stretching mat; mat for pilates; yoga accessories",
    ),
    _sub(
        "sports/strength_weights",
        (20.0, 600.0),
        "adjustable dumbbells; free weights; hand weights; weight plate set; kettlebells; "
        "barbell set",
        "adjustable; rubber-coated; cast iron; quick-change; hex-shaped; space-saving; "
        "knurled-grip",
        "for strength training at home; to build muscle without a gym; for full-body workouts; "
        "made for your garage gym; for progressive overload; to tone arms and shoulders",
        "dumbbells; home gym weights; kettlebell set; adjustable weight set; "
        "strength training equipment; lifting weights; barbell and plates; weight rack; "
        "muscle building gear",
    ),
    _sub(
        "sports/road_bikes",
        (400.0, 4500.0),
        "road bike; racing bicycle; endurance bike; gravel bike; carbon road bicycle; "
        "commuter bike",
        "carbon fiber; aluminum frame; aerodynamic; disc-brake; 22-speed; featherweight; "
        "endurance-geometry",
        "for long weekend rides; built for climbing hills; made for your daily commute; "
        "for group rides and races; to ride faster with less effort; for hundred-mile rides",
        "road bicycle; racing bike; gravel bicycle; cycling bike; carbon bike; bike for commuting; "
        "endurance road bike; road cycling; triathlon bike",
    ),
    _sub(
        "sports/tennis_rackets",
        (30.0, 300.0),
        "tennis racket; tennis racquet; graphite racquet; junior tennis racket; oversize racquet; "
        "tournament racquet",
        "graphite; oversized head; head-light; pre-strung; vibration-dampening; control-oriented; "
        "spin-friendly",
        "for powerful baseline shots; to improve your serve; for club and league matches; "
        "made for beginners learning the game; for more spin and control; for doubles at the club",
        "tennis racquet; racquet for beginners; graphite tennis racket; tennis gear; "
        "strung racquet; tennis equipment; light racquet; racquet for spin; tennis racket sale",
    ),
    # electronics
    _sub(
        "electronics/laptops",
        (350.0, 3000.0),
        "laptop; notebook computer; ultrabook; portable pc; thin-and-light notebook; 2-in-1 laptop",
        "16gb ram; ssd-equipped; long battery life; backlit keyboard; lightweight; 14-inch; "
        "high-resolution display",
        "for work and study on the go; built for multitasking; for students and professionals; "
        "to edit photos and video anywhere; for all-day productivity; for remote work",
        "laptop computer; notebook pc; ultrabook deals; student laptop; work laptop; "
        "portable computer; thin laptop; laptop for college; business notebook",
    ),
    _sub(
        "electronics/headphones",
        (25.0, 550.0),
        "wireless headphones; noise-cancelling headset; over-ear headphones; bluetooth earbuds; "
        "true wireless earphones; studio headphones",
        "noise-cancelling; over-ear; wireless; long-lasting battery; hi-fi; foldable; sweat-proof",
        "for immersive music listening; to block out commuter noise; for calls and podcasts; "
        "for focused work in noisy offices; for workouts and travel; for crystal-clear sound",
        "bluetooth headphones; earbuds; noise cancelling headphones; wireless earphones; "
        "anc headset; in-ear headphones; headphones for travel; audio headphones; "
        "earphones for running",
    ),
    _sub(
        "electronics/smartphones",
        (150.0, 1500.0),
        "smartphone; cell phone; mobile phone; android phone; unlocked phone; 5g handset",
        "5g; unlocked; dual-sim; 128gb; triple-camera; fast-charging; oled-screen",
        "to stay connected anywhere; for photos, apps and messaging; "
        "with all-day battery for busy days; for streaming and social media; "
        "for mobile gaming and video calls; to upgrade your old phone",
        "new phone; cellphone deals; unlocked smartphone; 5g phone; android smartphone; "
        "mobile handset; phone upgrade; sim free phone; best camera phone",
    ),
    _sub(
        "electronics/smart_home",
        (20.0, 400.0),
        "smart home devices; home automation gadgets; connected home hub; smart home kit; "
        "voice-controlled home devices; smart home starter set",
        "voice-controlled; wifi-connected; app-controlled; energy-saving; easy-to-install; "
        "hub-free; matter-compatible",
        "to automate lights and heating; to control your home from your phone; "
        "for a smarter, safer house; to cut your energy bills; for hands-free routines; "
        "to manage the home while you are away",
        "smart home; home automation; smart plug; smart thermostat; smart speaker; "
        "wifi light bulbs; connected home; voice assistant devices; smart lighting",
    ),
    _sub(
        "electronics/cameras",
        (300.0, 3500.0),
        "digital camera; mirrorless camera; dslr camera; interchangeable-lens camera; "
        "compact camera; vlogging camera",
        "24-megapixel; full-frame; 4k video; weather-sealed; image-stabilized; fast-autofocus; "
        "retro-style",
        "for stunning travel photos; for portrait and landscape photography; "
        "to shoot 4k video and vlogs; for beginners learning photography; "
        "for professional photo shoots; to capture sharp wildlife shots",
        "dslr; photography camera; camera body; 4k camera; vlog camera; camera with lens kit; "
        "full frame camera; camera for beginners; mirrorless body",
    ),
    # home
    _sub(
        "home/coffee_makers",
        (25.0, 900.0),
        "coffee maker; espresso machine; drip coffee machine; coffee brewer; bean-to-cup machine; "
        "pour-over coffee set",
        "programmable; 12-cup; built-in grinder; milk-frothing; stainless steel; compact; "
        "thermal-carafe",
        "for barista-style coffee at home; to brew your morning cup fast; "
        "for lattes and cappuccinos; for the whole office; to wake up to fresh coffee; "
        "for rich, full-bodied espresso",
        "espresso maker; coffee machine; drip coffee maker; cappuccino machine; home espresso; "
        "latte maker; automatic coffee machine; single serve coffee; french press",
    ),
    _sub(
        "home/cookware",
        (30.0, 600.0),
        "cookware set; pots and pans; nonstick frying pan; cast iron skillet; saucepan set; "
        "stainless steel pan set",
        "nonstick; induction-ready; oven-safe; pfas-free; tri-ply; dishwasher-safe; ceramic-coated",
        "for everyday home cooking; to sear, saute and simmer; for healthier low-oil cooking; "
        "made for gas and induction hobs; for even heat on every meal; to upgrade your kitchen",
        "pots and pans set; frying pan; skillet; saucepans; kitchen cookware; nonstick pan; "
        "cast iron pan; cooking pots; wok",
    ),
    _sub(
        "home/vacuums",
        (60.0, 800.0),
        "vacuum cleaner; cordless stick vacuum; robot vacuum; upright vacuum; handheld vacuum; "
        "robotic floor cleaner",
        "cordless; bagless; hepa-filtered; self-emptying; powerful-suction; pet-hair; quiet",
        "for spotless floors and carpets; to pick up pet hair with ease; "
        "for quick everyday cleanups; to clean the house while you relax; "
        "for allergy-friendly cleaning; for hardwood and rugs",
        "vacuum; robot vacuum cleaner; stick vacuum; cordless vacuum; floor cleaner; "
        "carpet cleaner; home vacuum; pet hair vacuum; robotic vacuum",
    ),
    _sub(
        "home/bedding",
        (25.0, 400.0),
        "bed sheets; duvet cover set; bedding set; down comforter; pillowcases and sheets; "
        "linen bedding",
        "100% cotton; 400-thread-count; hypoallergenic; cooling; organic; silky sateen; queen-size",
        "for a better night's sleep; to keep you cool on hot nights; for a cozy, hotel-like bed; "
        "made for sensitive skin; to refresh your bedroom; for warm winter nights",
        "sheets; bed linen; comforter; duvet; pillowcases; sheet set; cotton bedding; "
        "hotel bedding; bed covers",
    ),
    _sub(
        "home/sofas",
        (300.0, 3000.0),
        "sofa; couch; sectional sofa; loveseat; sleeper sofa; living room settee",
        "velvet; mid-century; modular; stain-resistant; deep-seated; l-shaped; reclining",
        "for family movie nights; to furnish your living room; for small apartments; "
        "to seat guests in comfort; for lounging after work; for cozy weekend naps",
        "couch; sofa; sectional; loveseat; sofa bed; living room furniture; modular sofa; "
        "recliner sofa; futon",
    ),
    # fashion
    _sub(
        "fashion/winter_coats",
        (70.0, 600.0),
        "winter coat; puffer jacket; down parka; insulated jacket; wool overcoat; "
        "warm winter jacket",
        "waterproof; down-filled; hooded; windproof; wool-blend; longline; packable",
        "for freezing winter days; to stay warm on your commute; for snowy weekends; "
        "made for cold-weather travel; for layering in chilly weather; to brave the wind and rain",
        "parka; puffer coat; down jacket; winter jacket; warm coat; overcoat; snow jacket; "
        "insulated coat; cold weather jacket",
    ),
    _sub(
        "fashion/jeans",
        (30.0, 250.0),
        "jeans; denim jeans; slim-fit denim; straight-leg jeans; denim pants; high-waisted jeans",
        "stretch; raw denim; distressed; high-rise; dark-wash; relaxed-fit; selvedge",
        "for everyday casual style; to pair with anything in your wardrobe; "
        "made to fit and flatter; for comfort all day; for a classic weekend look; "
        "that get better with every wear",
        "denim; skinny jeans; slim jeans; blue jeans; mom jeans; bootcut jeans; denim trousers; "
        "stretch jeans; mens jeans",
    ),
    _sub(
        "fashion/dresses",
        (30.0, 400.0),
        "dress; summer dress; evening gown; cocktail dress; maxi dress; wrap dress",
        "floral; flowy; satin; midi-length; sleeveless; elegant; linen",
        "for weddings and special occasions; for warm summer days; to turn heads at a party; "
        "for date nights; for a graceful evening look; for the office and beyond",
        "dresses; sundress; party dress; formal gown; maxi dresses; wedding guest dress; "
        "prom dress; cocktail attire; womens dresses",
    ),
    _sub(
        "fashion/handbags",
        (40.0, 1500.0),
        "handbag; leather purse; tote bag; crossbody bag; shoulder bag; clutch",
        "genuine leather; vegan leather; quilted; structured; roomy; chain-strap; minimalist",
        "to carry your essentials in style; for work and weekends; for evenings out; "
        "with room for a laptop; to complete any outfit; for everyday errands",
        "purse; tote; crossbody purse; shoulder purse; designer bag; leather bag; womens bag; "
        "clutch bag; handbags",
    ),
    _sub(
        "fashion/watches",
        (60.0, 2500.0),
        "wristwatch; analog watch; automatic watch; dress watch; chronograph; dive watch",
        "automatic; sapphire-crystal; stainless steel; water-resistant; minimalist; leather-strap; "
        "swiss-made",
        "for timeless everyday style; to mark a special milestone; for boardroom and beyond; "
        "built for diving and adventure; as a gift to treasure; for precise timekeeping",
        "watch; wrist watch; mens watch; luxury watch; mechanical watch; chronograph watch; "
        "diver watch; analog wristwatch; womens watch",
    ),
    # beauty
    _sub(
        "beauty/moisturizers",
        (10.0, 120.0),
        "face moisturizer; facial cream; hydrating lotion; day cream; night cream; "
        "skin moisturizing gel",
        "hydrating; fragrance-free; spf 30; hyaluronic acid; non-comedogenic; anti-aging; "
        "lightweight",
        "for dry and sensitive skin; to smooth fine lines; for a dewy, glowing complexion; "
        "to lock in moisture all day; for oily and combination skin; to calm redness",
        "moisturizer; face cream; facial lotion; skincare; hydrating cream; anti aging cream; "
        "moisturising cream; face lotion spf; skin cream",
    ),
    _sub(
        "beauty/lipsticks",
        (8.0, 60.0),
        "lipstick; matte lip color; liquid lipstick; lip tint; lip gloss; lip crayon",
        "long-wearing; matte; creamy; transfer-proof; nude; bold red; moisturizing",
        "for a bold evening look; that lasts all day without touch-ups; for soft, natural lips; "
        "to complete your makeup; for a pop of color; that won't dry out your lips",
        "lip color; matte lipstick; red lipstick; nude lipstick; makeup lips; lip stain; "
        "liquid lip; lip makeup; lip products",
    ),
    _sub(
        "beauty/shampoos",
        (6.0, 60.0),
        "shampoo; hair wash; clarifying shampoo; sulfate-free shampoo; "
        "shampoo and conditioner set; hair cleanser",
        "sulfate-free; volumizing; anti-dandruff; color-safe; argan oil; nourishing; strengthening",
        "for frizzy or curly hair; to soothe an itchy scalp; for thicker-looking hair; "
        "to protect color-treated hair; for shiny, healthy hair; for daily washing",
        "hair care; conditioner; dandruff shampoo; hair products; curly hair shampoo; "
        "volumizing shampoo; sulfate free shampoo; scalp care; shampoo for thinning hair",
    ),
    _sub(
        "beauty/fragrances",
        (25.0, 250.0),
        "perfume; eau de parfum; cologne; fragrance; eau de toilette; signature scent",
        "floral; woody; long-lasting; citrus; musky; fresh; amber",
        "for a signature scent; as a gift for someone special; for evenings out; "
        "that lingers all day; for summer days; to make a lasting impression",
        "cologne for men; womens perfume; fragrance gift set; body mist; scent; aftershave; "
        "niche fragrance; perfume samples; designer perfume",
    ),
    _sub(
        "beauty/shaving",
        (8.0, 150.0),
        "razor; electric shaver; safety razor; shaving kit; beard trimmer; cartridge razor",
        "precision; cordless; stainless steel; sensitive-skin; rechargeable; 5-blade; waterproof",
        "for a smooth, close shave; to shape and trim your beard; without nicks or irritation; "
        "for quick morning grooming; for travel grooming; for sensitive skin",
        "shaver; shaving cream; electric razor; mens grooming; safety razor blades; trimmer; "
        "body groomer; razor blades; beard care",
    ),
    # travel
    _sub(
        "travel/flights",
        (50.0, 1500.0),
        "flight; airfare; plane ticket; air ticket; round-trip flight; airline ticket",
        "nonstop; round-trip; last-minute; budget; business-class; refundable; direct",
        "to your dream destination; for weekend getaways; with flexible dates; "
        "for family holidays; for business trips; with no hidden fees",
        "cheap flights; plane tickets; flight deals; airline tickets; book flight; direct flights; "
        "flights to europe; last minute flights; airfare sale",
    ),
    _sub(
        "travel/hotels",
        (60.0, 600.0),
        "hotel room; hotel stay; resort; boutique hotel; accommodation; inn",
        "beachfront; boutique; all-inclusive; pet-friendly; 4-star; city-center; family-friendly",
        "for a relaxing getaway; close to top attractions; with free breakfast; "
        "for business travelers; for romantic weekends; with ocean views",
        "hotels; hotel booking; resorts; places to stay; cheap hotels; hotel deals; lodging; b&b; "
        "hotel near me",
    ),
    _sub(
        "travel/luggage",
        (40.0, 700.0),
        "suitcase; carry-on luggage; checked luggage; rolling suitcase; travel duffel; luggage set",
        "hardshell; lightweight; expandable; spinner-wheel; tsa-lock; cabin-size; durable",
        "for frequent flyers; to pack for a long trip; that fits in the overhead bin; "
        "for the whole family's packing; built to survive baggage handling; for weekend trips",
        "luggage; carry on; travel bag; spinner luggage; hard case suitcase; cabin bag; "
        "duffel bag; suitcase set; checked bag",
    ),
    _sub(
        "travel/car_rental",
        (25.0, 150.0),
        "car rental; rental car; hire car; vehicle rental; airport car hire; one-way rental",
        "unlimited-mileage; airport; economy; suv; no-deposit; one-way; free-cancellation",
        "for coastal road trips; to explore at your own pace; ready at the airport arrivals hall; "
        "for a weekend away from the city; with full collision cover; for group travel",
        "car hire; rent a car; rental cars; car rental deals; cheap car rental; suv rental; "
        "airport car rental; vehicle hire; van rental",
    ),
    _sub(
        "travel/cruises",
        (400.0, 5000.0),
        "cruise; cruise vacation; ocean cruise; river cruise; cruise holiday; sailing voyage",
        "all-inclusive; luxury; 7-night; caribbean; mediterranean; family; adults-only",
        "to see several ports in one trip; with onboard entertainment; "
        "for a relaxing sea vacation; with dining included; for honeymooners; "
        "to explore coastal cities",
        "cruises; cruise deals; caribbean cruise; cruise ship; river cruises; alaska cruise; "
        "cruise packages; last minute cruise; mediterranean cruise",
    ),
    # finance
    _sub(
        "finance/credit_cards",
        (15.0, 550.0),
        "credit card; rewards card; cashback card; travel credit card; balance transfer card; "
        "no-fee credit card",
        "cashback; 0% apr; no-annual-fee; travel-rewards; contactless; premium; low-interest",
        "to earn points on everyday spending; to pay off debt faster; for airport lounge access; "
        "to build your credit; with a generous sign-up bonus; for everyday purchases",
        "credit cards; cash back card; rewards credit card; travel card; balance transfer; "
        "0 apr card; best credit card; credit card offers; airline miles card",
    ),
    _sub(
        "finance/personal_loans",
        (50.0, 1500.0),
        "personal loan; installment loan; debt consolidation loan; unsecured loan; "
        "quick cash loan; online loan",
        "low-rate; fixed-rate; fast-approval; no-collateral; flexible; same-day; transparent",
        "to consolidate credit card debt; for home improvements; for unexpected expenses; "
        "with funds in your account tomorrow; to finance a big purchase; "
        "with fixed monthly payments",
        "personal loans; loan rates; borrow money; debt consolidation; online lender; "
        "unsecured loans; loan calculator; fast loan; low interest loan",
    ),
    _sub(
        "finance/savings_accounts",
        (25.0, 1000.0),
        "savings account; high-yield savings account; money market account; "
        "certificate of deposit; online savings account; deposit account",
        "high-yield; fdic-insured; no-minimum; fee-free; competitive-rate; online; flexible",
        "to grow your emergency fund; to earn more interest on your cash; "
        "for short-term savings goals; with no monthly fees; to save for a house deposit; "
        "with easy transfers",
        "high yield savings; best savings rates; cd rates; money market; online bank; "
        "interest rates; savings interest; open savings account; emergency fund",
    ),
    _sub(
        "finance/online_brokerage",
        (5.0, 100.0),
        "brokerage account; stock trading app; investment platform; online broker; "
        "trading account; robo-advisor",
        "commission-free; beginner-friendly; low-fee; fractional-share; mobile; automated; "
        "etf-focused",
        "to invest in stocks and etfs; to grow long-term wealth; for retirement investing; "
        "to start investing with little money; with automated portfolio rebalancing; "
        "for active traders",
        "investing app; stock trading; buy stocks; online brokerage; invest money; etf investing; "
        "robo advisor; trading platform; brokerage fees",
    ),
    _sub(
        "finance/mortgages",
        (300.0, 3000.0),
        "mortgage; home loan; mortgage refinance; fixed-rate mortgage; first-time buyer mortgage; "
        "house loan",
        "fixed-rate; low-down-payment; 30-year; adjustable-rate; fast-closing; government-backed; "
        "competitive",
        "to buy your first home; to lower your monthly payments; with pre-approval in minutes; "
        "for your dream house; to refinance at a better rate; with expert loan officers",
        "mortgage rates; home loans; refinance; mortgage calculator; mortgage lender; "
        "first time home buyer; refinance rates; house financing; mortgage pre approval",
    ),
    # education
    _sub(
        "education/coding_courses",
        (15.0, 12000.0),
        "coding course; programming bootcamp; software development course; python class; "
        "web development course; coding bootcamp",
        "online; self-paced; project-based; beginner-friendly; mentor-led; certified; intensive",
        "to launch a career in tech; to learn python from scratch; to build real web apps; "
        "for career changers; to land your first developer job; at your own pace",
        "learn to code; programming course; coding classes; python course; javascript course; "
        "web development; software engineering course; learn programming; coding for beginners",
    ),
    _sub(
        "education/language_courses",
        (10.0, 800.0),
        "language course; spanish lessons; online language classes; french course; "
        "language tutoring; english as a second language course",
        "conversational; native-speaker; interactive; immersive; beginner; live-online; flexible",
        "to speak confidently abroad; for travel and work; to prepare for a move overseas; "
        "in just 15 minutes a day; to become fluent faster; for kids and adults",
        "learn spanish; language lessons; learn french; language tutor; esl classes; learn german; "
        "language learning; speak italian; japanese lessons",
    ),
    _sub(
        "education/exam_prep",
        (50.0, 1500.0),
        "test prep course; exam preparation; sat prep; gre prep class; practice exams; "
        "exam tutoring",
        "proven; score-boosting; adaptive; expert-led; comprehensive; timed; personalized",
        "to raise your test score; to get into your dream school; with full-length practice tests; "
        "for the bar and licensing exams; to study smarter; with a score guarantee",
        "test prep; sat practice; gre prep; gmat course; act tutoring; exam practice; study guide; "
        "lsat prep; practice tests",
    ),
    _sub(
        "education/business_degrees",
        (1000.0, 60000.0),
        "online mba; business degree; executive mba; management program; business school program; "
        "master of business administration",
        "accredited; part-time; online; executive; flexible; globally-ranked; career-focused",
        "to advance into leadership; while you keep working; to grow your salary; "
        "to start your own company; with a global alumni network; for mid-career professionals",
        "mba program; business school; executive education; management degree; mba admissions; "
        "part time mba; business courses; leadership program; mba online",
    ),
    _sub(
        "education/music_lessons",
        (20.0, 500.0),
        "music lessons; guitar lessons; piano lessons; online music course; singing lessons; "
        "instrument tutoring",
        "beginner-friendly; one-on-one; online; video-based; fun; structured; all-ages",
        "to play your favourite songs; to learn an instrument at any age; for young musicians; "
        "to read sheet music; from the comfort of home; to perform with confidence",
        "learn guitar; learn piano; voice lessons; music teacher; drum lessons; music classes; "
        "violin lessons; guitar course; piano teacher",
    ),
    # automotive
    _sub(
        "automotive/tires",
        (60.0, 400.0),
        "car tires; all-season tires; winter tires; performance tyres; tire set; replacement tires",
        "all-season; run-flat; low-noise; fuel-efficient; studless; high-traction; long-tread-life",
        "for safe braking in the rain; for snowy and icy roads; to improve fuel economy; "
        "for a quiet highway ride; for sporty handling; that last tens of thousands of miles",
        "tires; tyres; winter tyres; snow tires; tire shop; tire installation; truck tires; "
        "new tires; all season tyres",
    ),
    _sub(
        "automotive/motor_oil",
        (8.0, 80.0),
        "motor oil; engine oil; synthetic oil; oil change kit; full synthetic motor oil; "
        "engine lubricant",
        "full-synthetic; 5w-30; high-mileage; low-viscosity; diesel-rated; long-life; conventional",
        "to protect your engine; for smoother engine performance; for older high-mileage cars; "
        "for extended oil change intervals; to reduce engine wear; for cold starts",
        "oil change; synthetic motor oil; 5w30; car oil; motor lubricant; oil filter; "
        "high mileage oil; diesel oil; engine oil change",
    ),
    _sub(
        "automotive/dash_cams",
        (40.0, 400.0),
        "dash cam; dashboard camera; car camera; driving recorder; front and rear dash cam; "
        "vehicle dvr",
        "4k; night-vision; loop-recording; gps-enabled; wide-angle; parking-mode; wifi",
        "to record every drive; for evidence after an accident; to protect your parked car; "
        "for rideshare drivers; to settle insurance disputes; for peace of mind on the road",
        "dashcam; car dvr; dash camera; car recorder; front camera car; rear view dash cam; "
        "parking camera; driving camera; accident camera",
    ),
    _sub(
        "automotive/car_detailing",
        (10.0, 150.0),
        "car wax; car detailing kit; car wash kit; ceramic coating; car polish; "
        "auto interior cleaner",
        "ceramic; hydrophobic; streak-free; professional-grade; scratch-removing; spray-on; "
        "ph-balanced",
        "for a showroom shine; to protect your paint; to clean your car at home; "
        "to remove swirls and scratches; for spotless interiors; that beads water for months",
        "car wash; detailing supplies; paint protection; auto detailing; car cleaning products; "
        "car shampoo; wax and polish; paint sealant; car care",
    ),
    _sub(
        "automotive/ev_chargers",
        (200.0, 1500.0),
        "ev charger; home charging station; electric car charger; wall-mounted charger; "
        "level 2 charger; portable ev charger",
        "level 2; 48-amp; wifi-connected; weatherproof; plug-in; smart; fast-charging",
        "to charge your ev overnight; for faster home charging; to schedule off-peak charging; "
        "for every electric vehicle; to skip public charging stations; "
        "for garage or driveway installs",
        "ev charging; home ev charger; electric vehicle charger; wall charger; "
        "car charging station; level 2 charging; ev charger installation; j1772 charger; "
        "ev charging cable",
    ),
    # pets
    _sub(
        "pets/dog_food",
        (15.0, 120.0),
        "dog food; dry kibble; wet dog food; puppy food; grain-free dog food; dog meals",
        "grain-free; high-protein; vet-recommended; natural; salmon-based; limited-ingredient; "
        "senior",
        "for healthy, active dogs; for puppies and seniors; for sensitive stomachs; "
        "for a shiny coat; to keep your dog at a healthy weight; made with real meat",
        "kibble; dog treats; grain free dog food; healthy dog food; dog nutrition; raw dog food; "
        "best dog food; food for puppies; dog diet",
    ),
    _sub(
        "pets/cat_litter",
        (8.0, 60.0),
        "cat litter; clumping litter; litter box; kitty litter; self-cleaning litter box; cat sand",
        "clumping; odor-control; dust-free; unscented; biodegradable; self-cleaning; lightweight",
        "for multi-cat homes; to keep odors away; for easy scooping; for a cleaner home; "
        "for sensitive paws; that lasts for weeks",
        "automatic litter box; litter tray; tofu litter; pine litter; cat litter box; "
        "odor control litter; cat supplies; natural cat litter; clumping cat litter",
    ),
    _sub(
        "pets/dog_toys",
        (5.0, 50.0),
        "dog toys; chew toys; squeaky toy; tug rope; fetch ball; puzzle feeder for dogs",
        "durable; squeaky; indestructible; interactive; rubber; plush; treat-dispensing",
        "for aggressive chewers; to keep your dog busy; for fetch at the park; "
        "to reduce boredom and anxiety; for teething puppies; for playtime together",
        "chew toy; squeaky toys; dog ball; tough dog toys; tug toy; puzzle toy for dogs; dog chew; "
        "fetch toys; puppy toys",
    ),
    _sub(
        "pets/aquariums",
        (30.0, 800.0),
        "aquarium; fish tank; aquarium kit; nano tank; reef tank; tropical fish tank",
        "glass; led-lit; filtered; 20-gallon; rimless; freshwater; saltwater",
        "for tropical fish; for a calming living room centerpiece; for beginners keeping fish; "
        "for planted aquascapes; for kids' first pets; for coral and reef fish",
        "aquarium filter; fish supplies; betta tank; aquascaping; tropical fish; aquarium heater; "
        "goldfish tank; fish tank kit; aquarium supplies",
    ),
    _sub(
        "pets/pet_grooming",
        (10.0, 150.0),
        "pet grooming kit; dog brush; pet clippers; deshedding tool; dog shampoo; "
        "nail grinder for pets",
        "quiet; cordless; deshedding; gentle; self-cleaning; professional; tearless",
        "to reduce shedding at home; for salon-quality grooming; for long-haired cats and dogs; "
        "to keep nails short safely; for a soft, clean coat; to save on groomer visits",
        "dog grooming; pet brush; dog clippers; deshedding brush; cat brush; dog nail clippers; "
        "pet shampoo; grooming tools; dog bath",
    ),
    # toys
    _sub(
        "toys/building_blocks",
        (15.0, 300.0),
        "building blocks; construction bricks; building set; stacking blocks; brick kit; "
        "block construction toy",
        "interlocking; stem; colorful; compatible; 1000-piece; creative; wooden",
        "for creative play; to build spaceships and castles; for budding engineers; "
        "for hours of screen-free fun; for family building nights; to develop fine motor skills",
        "brick toys; construction toys; building kits; stem toys; stacking toys; block set; "
        "bricks for kids; creative building toys; toy bricks",
    ),
    _sub(
        "toys/dolls",
        (10.0, 150.0),
        "doll; baby doll; fashion doll; dollhouse; rag doll; doll playset",
        "posable; realistic; soft; collectible; dress-up; handmade; interactive",
        "for imaginative role play; for little caregivers; as a birthday gift; "
        "for storytelling and pretend play; with outfits and accessories; "
        "for toddlers and preschoolers",
        "dolls; baby dolls; fashion dolls; doll clothes; toy dolls; doll accessories; "
        "pretend play toys; doll set; doll house",
    ),
    _sub(
        "toys/rc_cars",
        (25.0, 400.0),
        "remote control car; rc truck; radio-controlled car; rc drift car; toy car with remote; "
        "rc monster truck",
        "high-speed; off-road; 4wd; rechargeable; waterproof; hobby-grade; 1:10-scale",
        "for backyard racing; for off-road adventures; for kids and adults alike; "
        "to race with friends; for jumps and stunts; for rc hobbyists",
        "rc car; remote control truck; rc cars; radio control car; remote car; rc racing; "
        "rc crawler; monster truck toy; hobby rc",
    ),
    _sub(
        "toys/strollers",
        (80.0, 1200.0),
        "stroller; baby stroller; pushchair; jogging stroller; travel system; pram",
        "lightweight; foldable; all-terrain; compact; reversible-seat; one-hand-fold; "
        "car-seat-compatible",
        "for city walks with baby; that folds in seconds; for newborns to toddlers; "
        "for travel and airports; for jogging parents; for twins and siblings",
        "travel stroller; double stroller; baby carriage; umbrella stroller; stroller for newborn; "
        "lightweight stroller; buggy; baby gear; stroller sale",
    ),
    _sub(
        "toys/jigsaw_puzzles",
        (8.0, 60.0),
        "jigsaw puzzle; 1000-piece puzzle; puzzle for adults; kids puzzle; picture puzzle; "
        "floor puzzle",
        "1000-piece; 500-piece; challenging; landscape; wooden; glossy; large-piece",
        "for cozy family evenings; to relax and unwind; for brain training; for rainy days; "
        "as a thoughtful gift; for preschool learning",
        "jigsaw puzzles; puzzles for adults; 1000 piece puzzle; puzzle; puzzle games; "
        "wooden puzzle; kids puzzles; puzzle mat; difficult puzzles",
    ),
    # groceries
    _sub(
        "groceries/coffee_beans",
        (10.0, 50.0),
        "coffee beans; whole bean coffee; ground coffee; espresso roast; single-origin coffee; "
        "specialty coffee",
        "freshly roasted; single-origin; dark roast; medium roast; fair-trade; organic; arabica",
        "for rich morning brews; for espresso and pour-over; roasted to order; "
        "for smooth, chocolatey flavor; for coffee lovers; sourced from small farms",
        "whole bean; espresso beans; coffee subscription; arabica coffee; dark roast coffee; "
        "coffee roasters; decaf coffee; fresh roasted coffee; coffee bag",
    ),
    _sub(
        "groceries/tea",
        (6.0, 40.0),
        "loose leaf tea; green tea; herbal tea; tea bags; matcha powder; black tea blend",
        "organic; caffeine-free; ceremonial-grade; hand-picked; fragrant; earl grey; chamomile",
        "for a calm afternoon; to unwind before bed; for a gentle energy boost; "
        "steeped hot or iced; for tea lovers; brimming with antioxidants",
        "tea; loose tea; matcha; herbal infusion; chai; oolong; tea sampler; tea subscription; "
        "green tea leaves",
    ),
    _sub(
        "groceries/meal_kits",
        (40.0, 120.0),
        "meal kit; recipe box; meal delivery kit; dinner kit; prepped meal box; cook-at-home kit",
        "pre-portioned; family-size; vegetarian; 30-minute; chef-designed; keto; calorie-smart",
        "to cook dinner without planning; delivered to your door weekly; for busy weeknights; "
        "to learn new recipes; for healthier home cooking; with no grocery runs",
        "meal kits; meal delivery; recipe boxes; dinner delivery; meal plan; meal subscription; "
        "healthy meal kit; easy dinner; food box",
    ),
    _sub(
        "groceries/chocolate",
        (3.0, 60.0),
        "dark chocolate; chocolate bar; artisan chocolate; cocoa truffles; chocolate gift box; "
        "bean-to-bar chocolate",
        "70% cocoa; vegan; single-origin; handcrafted; sugar-free; sea salt; hazelnut",
        "for a guilt-free treat; as a sweet gift; for chocolate lovers; to pair with wine; "
        "for baking and desserts; to satisfy your sweet tooth",
        "chocolate; dark chocolate bar; truffles; chocolate gift; cocoa; gourmet chocolate; "
        "chocolate box; candy bar; praline",
    ),
    _sub(
        "groceries/olive_oil",
        (8.0, 70.0),
        "olive oil; extra virgin olive oil; cold-pressed oil; cooking oil; evoo bottle; "
        "greek olive oil",
        "cold-pressed; extra virgin; unfiltered; first-harvest; organic; italian; peppery",
        "for salads and dipping; for everyday cooking; for mediterranean recipes; "
        "for drizzling over pasta; for heart-healthy meals; to elevate simple dishes",
        "evoo; extra virgin; salad dressing oil; italian olive oil; olive oil tin; "
        "premium olive oil; oil for frying; olive oil gift; olive oil bottle",
    ),
    # health
    _sub(
        "health/multivitamins",
        (8.0, 60.0),
        "multivitamin; daily vitamins; vitamin supplement; gummy vitamins; vitamin d supplement; "
        "vitamin and mineral complex",
        "vegan; once-daily; whole-food; sugar-free; gluten-free; high-potency; chewable",
        "to support your immune system; for energy and focus; to fill nutrition gaps; "
        "for women's health; for bone health; for healthy aging",
        "vitamins; vitamin d; supplements; vitamin c; immune support; prenatal vitamins; b12; "
        "daily supplement; mens multivitamin",
    ),
    _sub(
        "health/protein_powder",
        (20.0, 90.0),
        "protein powder; whey protein; plant protein; protein shake mix; casein protein; "
        "muscle recovery powder",
        "chocolate; vanilla; low-sugar; grass-fed; vegan; unflavored; 25g-protein",
        "for post-workout recovery; to build lean muscle; as a meal replacement; "
        "for plant-based athletes; to hit your protein goals; for weight management",
        "whey; vegan protein; protein shake; mass gainer; isolate protein; post workout shake; "
        "pea protein; collagen protein; protein supplement",
    ),
    _sub(
        "health/bp_monitors",
        (25.0, 150.0),
        "blood pressure monitor; bp cuff; home blood pressure machine; sphygmomanometer; "
        "wrist blood pressure monitor; digital bp monitor",
        "clinically-validated; upper-arm; bluetooth; wrist; automatic; large-cuff; "
        "irregular-heartbeat-detecting",
        "to track hypertension at home; to share readings with your doctor; "
        "for accurate daily readings; for seniors and caregivers; to keep an eye on heart health; "
        "for peace of mind",
        "bp monitor; blood pressure cuff; hypertension monitor; heart rate monitor; bp machine; "
        "arm cuff monitor; home health monitor; blood pressure machine; blood pressure test",
    ),
    _sub(
        "health/eyeglasses",
        (30.0, 500.0),
        "eyeglasses; prescription glasses; reading glasses; eyewear frames; blue light glasses; "
        "spectacles",
        "lightweight; anti-glare; blue-light-filtering; titanium; progressive; round; acetate",
        "for sharp, clear vision; for long hours at the screen; with prescription lenses included; "
        "for reading up close; to update your look; with free home try-on",
        "glasses; eyeglasses online; glasses frames; optical; progressive lenses; eyewear; "
        "optician; glasses for men; computer glasses",
    ),
    _sub(
        "health/hearing_aids",
        (300.0, 5000.0),
        "hearing aid; hearing amplifier; otc hearing aids; in-ear hearing device; "
        "rechargeable hearing aids; invisible hearing aid",
        "rechargeable; invisible; bluetooth; over-the-counter; digital; behind-the-ear; "
        "noise-reducing",
        "to hear conversations clearly; for mild to moderate hearing loss; "
        "to enjoy tv at normal volume; for noisy restaurants; with a free hearing test; "
        "to stay connected with family",
        "hearing aids; hearing loss; hearing test; otc hearing aid; audiologist; tinnitus relief; "
        "ear amplifier; hearing device; hearing help",
    ),
    # gaming
    _sub(
        "gaming/consoles",
        (250.0, 700.0),
        "game console; video game console; gaming system; handheld console; next-gen console; "
        "home console",
        "4k; next-gen; portable; 1tb; disc-edition; digital-edition; backwards-compatible",
        "for family game nights; to play the latest blockbusters; for couch co-op; "
        "for gaming on the go; with a huge game library; for smooth 120fps gameplay",
        "video games; gaming console; console bundle; handheld gaming; console deals; new console; "
        "games system; console games; gaming machine",
    ),
    _sub(
        "gaming/keyboards",
        (40.0, 300.0),
        "mechanical keyboard; gaming keyboard; rgb keyboard; tenkeyless keyboard; "
        "hot-swappable keyboard; keyboard with mechanical switches",
        "rgb-backlit; hot-swappable; tenkeyless; wireless; tactile; linear-switch; compact 65%",
        "for competitive gaming; for fast, precise keystrokes; for gamers and typists; "
        "to customize every key; for late-night gaming sessions; for a satisfying typing feel",
        "keyboard switches; custom keyboard; keycaps; tkl keyboard; wireless gaming keyboard; "
        "60 percent keyboard; mech keyboard; clicky keyboard; esports keyboard",
    ),
    _sub(
        "gaming/gaming_chairs",
        (100.0, 600.0),
        "gaming chair; ergonomic gaming seat; racing-style chair; streamer chair; "
        "reclining gaming chair; esports chair",
        "ergonomic; reclining; lumbar-support; faux-leather; breathable fabric; "
        "adjustable-armrest; heavy-duty",
        "for all-day comfort at your desk; to support your back through long sessions; "
        "for streamers and esports players; to improve your posture; for your battle station; "
        "for hours of comfortable play",
        "ergonomic chair; computer chair; racing chair; desk chair for gaming; gaming seat; "
        "office gaming chair; streaming chair; chair with lumbar support; pc gaming chair",
    ),
    _sub(
        "gaming/vr_headsets",
        (250.0, 1500.0),
        "vr headset; virtual reality headset; vr goggles; standalone vr headset; "
        "mixed reality headset; vr glasses",
        "standalone; wireless; high-resolution; inside-out tracking; mixed-reality; 120hz; "
        "lightweight",
        "for immersive virtual worlds; for vr fitness workouts; to play games in 3d; "
        "for virtual travel and social spaces; with no pc required; for room-scale gaming",
        "virtual reality; vr; vr games; metaverse headset; ar headset; mixed reality; vr gaming; "
        "vr set; virtual reality games",
    ),
    _sub(
        "gaming/board_games",
        (15.0, 120.0),
        "board game; tabletop game; strategy board game; card game; party game; family board game",
        "strategy; cooperative; 2-player; family-friendly; award-winning; deck-building; "
        "quick-to-learn",
        "for game night with friends; for family fun; for 2 to 6 players; "
        "to get everyone off screens; for strategy fans; for parties and gatherings",
        "board games; tabletop games; card games; party games; strategy games; family games; "
        "game night; cooperative games; dice games",
    ),
    # garden
    _sub(
        "garden/lawn_mowers",
        (150.0, 3500.0),
        "lawn mower; cordless mower; robotic lawn mower; push mower; riding mower; grass cutter",
        "cordless; self-propelled; battery-powered; gas-powered; mulching; quiet; 21-inch",
        "for a neat, striped lawn; for small and large yards; to cut grass with less effort; "
        "for weekly yard care; that mows while you relax; for hilly gardens",
        "mower; robot mower; riding lawn mower; electric mower; lawn care; yard equipment; "
        "grass cutting; lawnmower sale; mowing",
    ),
    _sub(
        "garden/drills",
        (40.0, 400.0),
        "cordless drill; power drill; drill driver; impact driver; hammer drill; drill and bit set",
        "20v; brushless; cordless; compact; variable-speed; high-torque; with two batteries",
        "for home repairs and diy projects; to drill into wood, metal and masonry; "
        "for furniture assembly; for professional contractors; to drive screws effortlessly; "
        "for weekend renovation jobs",
        "drill; power tools; drill set; electric drill; screwdriver drill; diy tools; drill bits; "
        "battery drill; tool kit",
    ),
    _sub(
        "garden/flower_seeds",
        (2.0, 30.0),
        "flower seeds; wildflower seed mix; seed packets; bulbs for planting; heirloom seeds; "
        "garden seeds",
        "heirloom; non-gmo; pollinator-friendly; perennial; annual; easy-to-grow; organic",
        "for a colorful garden; to attract bees and butterflies; for spring planting; "
        "for pots and borders; for beginner gardeners; to grow your own blooms",
        "seeds; wildflower seeds; tulip bulbs; sunflower seeds; seed starter; perennial flowers; "
        "planting seeds; flower bulbs; seed catalog",
    ),
    _sub(
        "garden/patio_furniture",
        (150.0, 3000.0),
        "patio furniture; outdoor dining set; garden furniture; patio sofa; outdoor lounge set; "
        "bistro set",
        "weather-resistant; teak; wicker; rust-proof aluminum; cushioned; modular; foldable",
        "for summer barbecues; for relaxing on the deck; for small balconies; "
        "for outdoor entertaining; to enjoy evenings outside; for poolside lounging",
        "outdoor furniture; garden set; patio set; outdoor sofa; deck furniture; "
        "balcony furniture; outdoor chairs; patio table; garden chairs",
    ),
    _sub(
        "garden/paint",
        (15.0, 90.0),
        "interior paint; wall paint; house paint; paint and primer; emulsion paint; ceiling paint",
        "low-voc; one-coat; washable; matte; eggshell; mildew-resistant; quick-drying",
        "for refreshing any room; for kids' bedrooms and kitchens; "
        "with great coverage in one coat; for a durable, scrubbable finish; "
        "to repaint your walls this weekend; for a smooth, even finish",
        "paint; house painting; paint colors; primer; paint supplies; paint roller; "
        "painting walls; room paint; paint samples",
    ),
    # software
    _sub(
        "software/antivirus",
        (20.0, 120.0),
        "antivirus software; internet security suite; malware protection; virus scanner; "
        "endpoint security; anti-malware app",
        "real-time; award-winning; lightweight; multi-device; ransomware-proof; ai-powered; "
        "cloud-based",
        "to block viruses and ransomware; to protect up to 5 devices; for safer online banking; "
        "to keep hackers out; for family computers; with identity theft monitoring",
        "antivirus; virus protection; malware removal; internet security; computer security; "
        "free antivirus; anti virus; ransomware protection; pc security",
    ),
    _sub(
        "software/vpn",
        (3.0, 15.0),
        "vpn service; virtual private network; vpn app; secure vpn; private browsing service; "
        "vpn subscription",
        "no-logs; high-speed; encrypted; multi-device; unlimited-bandwidth; ad-blocking; "
        "global-server",
        "to browse privately; for safe public wifi; to stream from anywhere; "
        "to hide your ip address; for remote workers; to unblock websites",
        "vpn; private browsing; hide ip; secure connection; vpn for streaming; online privacy; "
        "vpn download; fast vpn; best vpn",
    ),
    _sub(
        "software/photo_editing",
        (5.0, 300.0),
        "photo editor; image editing software; photo editing app; raw processor; "
        "photo retouching tool; picture editor",
        "ai-powered; layer-based; beginner-friendly; professional; cloud-synced; one-click; "
        "non-destructive",
        "to retouch portraits; for stunning social media photos; to remove backgrounds in a click; "
        "for photographers and designers; to batch-edit raw files; to fix lighting and color",
        "photo editing; image editor; edit pictures; photo retouch; background remover; "
        "raw editing; photo filters; graphic design software; photo app",
    ),
    _sub(
        "software/project_management",
        (5.0, 40.0),
        "project management software; task management app; team collaboration tool; "
        "kanban board app; work management platform; project planner",
        "cloud-based; collaborative; agile; easy-to-use; integrated; customizable; real-time",
        "to keep projects on schedule; for remote teams; to track tasks and deadlines; "
        "to plan sprints; for agencies and startups; to replace messy spreadsheets",
        "project management; task tracker; kanban; team planner; gantt chart; to do app; "
        "workflow software; project tracking; agile tools",
    ),
    _sub(
        "software/website_builders",
        (5.0, 50.0),
        "website builder; site builder; web hosting with builder; drag-and-drop website creator; "
        "ecommerce website platform; online store builder",
        "drag-and-drop; no-code; mobile-friendly; seo-ready; free-domain; template-based; "
        "ecommerce-ready",
        "to launch your site in an hour; for small businesses; to sell products online; "
        "for portfolios and blogs; with no coding needed; for restaurants and local shops",
        "make a website; web hosting; create website; online store; ecommerce platform; "
        "blog builder; domain name; small business website; website templates",
    ),
)

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(s.category for s in SUBTOPICS))

BRANDS: dict[str, tuple[str, ...]] = {
    "sports": (
        "Pacewell",
        "Kestrova",
        "Trailvane",
        "Ironhollow",
        "Lumafit",
        "Sprintara",
        "Corevane",
        "Brisklane",
    ),
    "electronics": (
        "Lumicore",
        "Voltrana",
        "Pixelmoor",
        "Ardentech",
        "Sonivex",
        "Quanterra",
        "Brightwave Labs",
        "Novatrix",
    ),
    "home": (
        "Hearthley",
        "Copperleaf Home",
        "Nestwell",
        "Brindlewood",
        "Oakhaven",
        "Kettlebrook",
        "Saltmarsh & Co",
        "Dovetail House",
    ),
    "fashion": (
        "Maison Verel",
        "Coldharbour",
        "Ashby & Lane",
        "Vellora",
        "Northwick",
        "Saffron Row",
        "Indigo Mill",
        "Thistle & Thread",
    ),
    "beauty": (
        "Aurelle",
        "Dewbloom",
        "Velvetine",
        "Solenne",
        "Mirabloom",
        "Petalsoft",
        "Clarivé",
        "Roseveil",
    ),
    "travel": (
        "Skyhaven",
        "Wayfarely",
        "Jetstrand",
        "Harborline",
        "Voyagio",
        "Atlas & Anchor",
        "Roamcraft",
        "Bluegate Travel",
    ),
    "finance": (
        "Crestmark Bank",
        "Ledgerly",
        "Northpeak Financial",
        "Fairvest",
        "Stonegate Credit",
        "Trellis Capital",
        "Oakmint",
        "Brightledger",
    ),
    "education": (
        "Learnova",
        "Skillforge Academy",
        "Brightpath Institute",
        "Cadence Learning",
        "Mentorly",
        "Lingoria",
        "Quillstone School",
        "Polymath Online",
    ),
    "automotive": (
        "Torqueline",
        "Roadvault",
        "Gearhaven",
        "Axlewright",
        "Voltdrive",
        "Pitlane Pro",
        "Ironmile",
        "Chromefield",
    ),
    "pets": (
        "Barkwell",
        "Whiskerwood",
        "Tailhaven",
        "Furrington",
        "Kibblecraft",
        "Snoutly",
        "Purrfield",
        "Fetchwell",
    ),
    "toys": (
        "Tumbletoy",
        "Brickhollow",
        "Wonderbeam",
        "Kiddlewick",
        "Playmoor",
        "Sprocket & Sprout",
        "Little Lanterns",
        "Gigglewood",
    ),
    "groceries": (
        "Harvest Fold",
        "Goldgrove",
        "Roastwell",
        "Cocoa & Crane",
        "Leafline Teas",
        "Olivara",
        "Pantrybell",
        "Greenfurrow",
    ),
    "health": (
        "Vitalore",
        "Pulsewise",
        "Clearsight Optics",
        "Nutrivane",
        "Hearwell",
        "Wellspire",
        "Medicrest",
        "Everhale",
    ),
    "gaming": (
        "Pixelforge",
        "Nightbyte",
        "Hexaplay",
        "Vortexa",
        "Critical Sprite",
        "Lootbox Lane",
        "Arcwyn",
        "Gridlock Games",
    ),
    "garden": (
        "Rootwell",
        "Mossgate",
        "Tillcraft",
        "Bramblecraft",
        "Fernhollow",
        "Spadework Co",
        "Hedgerow Tools",
        "Sunpatch",
    ),
    "software": (
        "Cipherline",
        "Taskory",
        "Shieldwell",
        "Pixelnest",
        "Siteloom",
        "Cloakly",
        "Planwise",
        "Bytegarden",
    ),
}

TITLE_TEMPLATES: tuple[str, ...] = (
    "{brand} {attr} {noun}",
    "{noun} {benefit} | {brand}",
    "{attr} {noun} by {brand}",
    "{brand} {noun} – {attr}, {benefit}",
    "Shop {attr} {noun} from {brand}",
    "{brand}: {noun} {benefit}",
    "New {attr} {noun} | {brand}",
    "{brand} {noun}, {benefit}",
    "Save on {attr} {noun} at {brand}",
    "{attr} {noun} {benefit} – {brand}",
)

DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "{brand} {noun}: {attr} and {attr2}, {benefit}. From {price}.",
    "Looking for {attr} {noun} {benefit}? Try {brand}: {attr2}, from {price}.",
    "Discover {attr}, {attr2} {noun} from {brand}, {benefit}. Prices start at {price}.",
    "Upgrade to {brand} {noun} {benefit}, now {attr} and {attr2} for only {price}.",
    "Choose {brand} for {attr} {noun} {benefit}. Only {price}, with free returns.",
    "{brand} brings you {attr}, {attr2} {noun} {benefit}, just {price}.",
    "Trusted by thousands: {brand} {noun}, {attr} and {attr2}. Order today from {price}.",
    "New from {brand}: {attr} {noun} {benefit}. Starting at {price}.",
    "Compare {attr} and {attr2} {noun} at {brand}, {benefit}. From {price}.",
    "Why wait? Get {brand} {noun}, {attr} and {benefit}, for {price}.",
)


def format_price(value: float) -> str:
    """The text a template's `{price}` expects, e.g. 1234.5 -> "$1,234"."""
    return f"${value:,.0f}"


def subtopics_of(category: str) -> tuple[Subtopic, ...]:
    """The subtopics of one category, in `SUBTOPICS` order."""
    return tuple(s for s in SUBTOPICS if s.category == category)
